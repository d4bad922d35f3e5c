"""The decoder-only language model with T5X's DecoderOnly network interface.

Every layer's self-attention is the causal variant of `config.attention`
(`num_decoder_layers` layers), with cached incremental decoding for every scheme.
"""
import gin
import flax.linen as nn
import jax.numpy as jnp

from fovea_jax.networks.network import Config
from fovea_jax.networks.stack import Stack, token_embedder


@gin.configurable
class DecoderOnly(nn.Module):
  config: Config

  def setup(self):
    cfg = self.config
    self.token_embedder = token_embedder(cfg)
    self.decoder = Stack(cfg, cfg.scheme, cfg.num_decoder_layers, causal=True,
                         is_decoder=True, shared_embedding=self.token_embedder,
                         norm_name='decoder_norm', with_logits=True,
                         name='decoder')

  def __call__(self, decoder_input_tokens, decoder_target_tokens,
               decoder_segment_ids=None, decoder_positions=None,
               decoder_causal_attention=None, *, enable_dropout=True,
               decode=False, max_decode_length=None, prefill=None,
               prefill_lengths=None):
    """Logits [batch, length, vocab]; decode=True: one token per row, cached.

    Prompts are fed through the cache one token at a time (T5X's decoding loop
    without `prefill`). decoder_causal_attention [batch, length] (T5X's
    prefix-LM): positions marked 1 also attend to each other; dense layers only
    (sparse schemes raise), and not while decoding.
    """
    del decoder_positions, max_decode_length  # relative bias needs neither
    if decoder_causal_attention is not None and decode:
      raise ValueError('decoder_causal_attention (prefix-LM inputs) needs the '
                       'whole prompt at once; it cannot be used with decode=True '
                       '(prompts are fed token by token).')
    if prefill or prefill_lengths is not None:
      raise ValueError('prefill is not supported by DecoderOnly: decode the '
                       'prompt token by token with decode=True (forced tokens).')
    tokens = jnp.asarray(decoder_input_tokens).astype(jnp.int32)
    if tokens.ndim != 2:
      raise ValueError(f'decoder_input_tokens must be [batch, length], got shape '
                       f'{tokens.shape}.')
    if decode:
      key_mask, decoder_segment_ids = None, None
    else:
      key_mask = jnp.asarray(decoder_target_tokens).astype(jnp.int32) > 0
    prefix = (None if decoder_causal_attention is None else
              jnp.asarray(decoder_causal_attention) > 0)
    return self.decoder(tokens, key_mask=key_mask,
                        segment_ids=decoder_segment_ids,
                        bidirectional_prefix=prefix,
                        deterministic=not enable_dropout, decode=decode)

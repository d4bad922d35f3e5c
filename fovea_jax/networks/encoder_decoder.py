"""The LongT5-style encoder-decoder with T5X's network interface.

Encoder self-attention uses `config.attention` (the long-context scheme, as in
the Fovea paper); decoder self-attention (causal, cached) and cross-attention are
dense. Interface: `__call__`, `encode`, `decode` exactly as T5X's
`t5x/examples/t5/network.Transformer`, so T5X-style model wrappers can drive it.
"""
import gin
import flax.linen as nn
import jax.numpy as jnp

from fovea_jax.networks.network import Config
from fovea_jax.layers.schemes import Dense
from fovea_jax.networks.stack import Stack, token_embedder


def _mask(tokens):
  return None if tokens is None else tokens > 0


@gin.configurable
class EncoderDecoder(nn.Module):
  config: Config

  def setup(self):
    cfg = self.config
    self.token_embedder = token_embedder(cfg)
    self.encoder = Stack(cfg, cfg.scheme, cfg.num_encoder_layers, causal=False,
                         is_decoder=False, shared_embedding=self.token_embedder,
                         norm_name='encoder_norm', name='encoder')
    self.decoder = Stack(cfg, Dense(), cfg.num_decoder_layers, causal=True,
                         is_decoder=True, shared_embedding=self.token_embedder,
                         norm_name='decoder_norm', with_logits=True,
                         name='decoder')

  def encode(self, encoder_input_tokens, encoder_segment_ids=None,
             enable_dropout=True):
    """[batch, enc_len] tokens -> [batch, enc_len, emb_dim] encodings."""
    tokens = jnp.asarray(encoder_input_tokens).astype(jnp.int32)
    if tokens.ndim != 2:
      raise ValueError(f'encoder_input_tokens must be [batch, length], got shape '
                       f'{tokens.shape}.')
    return self.encoder(tokens, key_mask=_mask(tokens),
                        segment_ids=encoder_segment_ids,
                        deterministic=not enable_dropout)

  def decode(self, encoded, encoder_input_tokens, decoder_input_tokens,
             decoder_target_tokens, encoder_segment_ids=None,
             decoder_segment_ids=None, decoder_positions=None,
             enable_dropout=True, decode=False, max_decode_length=None):
    """Logits [batch, dec_len, vocab]; decode=True: one token per row, cached.

    decoder_positions and max_decode_length are accepted for T5X compatibility;
    the relative-position bias needs only the cache index (as in T5X).
    """
    del decoder_positions, max_decode_length
    encoder_tokens = jnp.asarray(encoder_input_tokens).astype(jnp.int32)
    decoder_tokens = jnp.asarray(decoder_input_tokens).astype(jnp.int32)
    if decode:
      # The cache masks future positions; the prompt side has no padding.
      key_mask, decoder_segment_ids, encoder_segment_ids = None, None, None
    else:
      key_mask = _mask(jnp.asarray(decoder_target_tokens).astype(jnp.int32))
    return self.decoder(decoder_tokens, key_mask=key_mask,
                        segment_ids=decoder_segment_ids, encoded=encoded,
                        encoder_key_mask=_mask(encoder_tokens),
                        encoder_segment_ids=encoder_segment_ids,
                        deterministic=not enable_dropout, decode=decode)

  def __call__(self, encoder_input_tokens, decoder_input_tokens,
               decoder_target_tokens, encoder_segment_ids=None,
               decoder_segment_ids=None, encoder_positions=None,
               decoder_positions=None, *, enable_dropout=True, decode=False):
    del encoder_positions  # relative attention needs no absolute positions
    encoded = self.encode(encoder_input_tokens,
                          encoder_segment_ids=encoder_segment_ids,
                          enable_dropout=enable_dropout)
    return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                       decoder_target_tokens,
                       encoder_segment_ids=encoder_segment_ids,
                       decoder_segment_ids=decoder_segment_ids,
                       decoder_positions=decoder_positions,
                       enable_dropout=enable_dropout, decode=decode)

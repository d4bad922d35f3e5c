"""A stack of transformer layers over token embeddings, with its final norm."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fovea_jax import layers
from fovea_jax.layers import schemes
from fovea_jax.layers import sharding as layer_sharding
from fovea_jax.networks.blocks import TransformerLayer, dropout_layer, norm_layer
from fovea_jax.networks.network import Config
from fovea_jax.sharding import axis_names as ax


def token_embedder(config: Config) -> layers.Embed:
  """The embedding table shared by the stacks (and the tied logits)."""
  return layers.Embed(num_embeddings=config.vocab_size, features=config.emb_dim,
                      dtype=config.activation_dtype, name='token_embedder')


class Stack(nn.Module):
  """Embeds tokens with the shared embedder and runs `num_layers` layers.

  scheme: the self-attention scheme (each layer asks it for its module, so
  MASFormer can schedule dense and local layers; layer 0 makes the tables it
  declares for the stack). causal: decoder self-attention.
  """
  config: Config
  scheme: schemes.Scheme
  num_layers: int
  causal: bool
  is_decoder: bool
  shared_embedding: Any
  norm_name: str
  # Decoders end in logits: untied `logits_dense` (T5.1.1) or the tied embedding
  # scaled by 1/sqrt(emb_dim) (`logits_via_embedding`, original T5).
  with_logits: bool = False

  @nn.compact
  def __call__(self, tokens, *, key_mask=None, segment_ids=None, encoded=None,
               encoder_key_mask=None, encoder_segment_ids=None,
               bidirectional_prefix=None, deterministic=True, decode=False):
    cfg = self.config
    x = self.shared_embedding(tokens.astype(jnp.int32)).astype(
        cfg.activation_dtype)
    x = dropout_layer(cfg)(x, deterministic=deterministic)
    x = layers.constrain_activations(x)
    shared = None
    for i in range(self.num_layers):
      x, shared = TransformerLayer(
          cfg, self.scheme.for_layer(i, self.num_layers, self.causal),
          bidirectional=not self.causal, is_decoder=self.is_decoder,
          make_stack_tables=self.scheme.stack_tables if i == 0 else None,
          name=f'layers_{i}')(
              x, shared, key_mask=key_mask, segment_ids=segment_ids,
              encoded=encoded, encoder_key_mask=encoder_key_mask,
              encoder_segment_ids=encoder_segment_ids,
              bidirectional_prefix=bidirectional_prefix,
              deterministic=deterministic, decode=decode)
    x = norm_layer(cfg, self.norm_name)(x)
    x = dropout_layer(cfg)(x, deterministic=deterministic)
    x = layers.constrain_activations(x)
    if not self.with_logits:
      return x
    if cfg.logits_via_embedding:
      logits = self.shared_embedding.attend(x) / jnp.sqrt(x.shape[-1]).astype(
          x.dtype)
    else:
      logits = layers.DenseGeneral(cfg.vocab_size, kernel_axes=(ax.EMBED, ax.VOCAB),
                                   dtype=cfg.activation_dtype,
                                   name='logits_dense')(x)
    logits = layers.constrain_activations(logits, layer_sharding.LOGITS_AXES)
    return logits.astype(jnp.float32)

"""Transformer layers of the T5.1.1 layout: pre-RMSNorm, residual, dropout.

Parameter names follow T5X (`pre_attention_layer_norm`, `attention`,
`pre_mlp_layer_norm`, `mlp`; decoder: `pre_self_attention_layer_norm`,
`self_attention`, `pre_cross_attention_layer_norm`, `encoder_decoder_attention`).
Layer 0 of every stack owns the relative-position table (`relpos_bias`) and
the tables the stack's scheme declares (`Scheme.stack_tables`), and hands them
to every later layer of its stack.
"""
import functools
from typing import Callable, Optional

import flax.linen as nn

from fovea_jax import layers
from fovea_jax.networks.network import Config
from fovea_jax.layers.schemes import Dense


def dropout_layer(config: Config):
  """T5X's dropout: the mask is shared along the length axis."""
  return nn.Dropout(config.dropout_rate, broadcast_dims=(-2,))


def _attention(config: Config, scheme_factory, name, static_kv=False):
  return layers.MultiHeadAttention(
      num_heads=config.num_heads, head_dim=config.head_dim,
      num_kv_heads=config.num_kv_heads, scheme_factory=scheme_factory,
      dtype=config.activation_dtype, implementation=config.implementation,
      static_kv=static_kv, smeared_keys=config.smeared_keys and not static_kv,
      name=name)


def norm_layer(config: Config, name):
  """T5 RMSNorm in the compute dtype."""
  return layers.RMSNorm(epsilon=config.layer_norm_epsilon,
                        dtype=config.activation_dtype, name=name)


def _bias_table(config: Config, bidirectional, name):
  return layers.RelativePositionBiasTable(
      num_heads=config.num_heads, num_buckets=config.relative_attention_num_buckets,
      max_distance=config.relative_attention_max_distance,
      bidirectional=bidirectional, dtype=config.activation_dtype, name=name)()


class TransformerLayer(nn.Module):
  """Self-attention (+ cross-attention when `encoded` is given) + gated MLP.

  shared: (T5 bias, stack tables) made by layer 0; layer 0 itself gets None
  and `make_stack_tables` (the scheme's `stack_tables`), makes them and returns
  them for the rest of the stack.
  """
  config: Config
  scheme_factory: Callable
  bidirectional: bool
  is_decoder: bool = False
  make_stack_tables: Optional[Callable] = None

  @nn.compact
  def __call__(self, x, shared=None, *, key_mask=None, segment_ids=None,
               encoded=None, encoder_key_mask=None, encoder_segment_ids=None,
               bidirectional_prefix=None, deterministic=True, decode=False):
    cfg = self.config
    if self.make_stack_tables is not None:
      table = functools.partial(_bias_table, cfg, self.bidirectional)
      stack_tables = dict(self.make_stack_tables(table))
      shared = (table('relpos_bias'), stack_tables)
    position_bias, stack_tables = shared
    prefix = 'self_' if self.is_decoder else ''
    y = norm_layer(cfg, f'pre_{prefix}attention_layer_norm')(x)
    y = _attention(cfg, self.scheme_factory, f'{prefix}attention')(
        y, y, key_mask=key_mask, position_bias=position_bias,
        stack_tables=stack_tables, q_segment_ids=segment_ids,
        kv_segment_ids=segment_ids, bidirectional_prefix=bidirectional_prefix,
        decode=decode)
    x = layers.constrain_activations(
        x + dropout_layer(cfg)(y, deterministic=deterministic))
    if encoded is not None:
      y = norm_layer(cfg, 'pre_cross_attention_layer_norm')(x)
      y = _attention(cfg, Dense().for_layer(0, 1, causal=False),
                     'encoder_decoder_attention', static_kv=True)(
                         y, encoded, key_mask=encoder_key_mask,
                         q_segment_ids=segment_ids,
                         kv_segment_ids=encoder_segment_ids, decode=decode)
      x = layers.constrain_activations(
          x + dropout_layer(cfg)(y, deterministic=deterministic))
    y = norm_layer(cfg, 'pre_mlp_layer_norm')(x)
    y = layers.MlpBlock(intermediate_dim=cfg.mlp_dim,
                        activations=cfg.mlp_activations,
                        dropout_rate=cfg.dropout_rate,
                        dtype=cfg.activation_dtype, name='mlp')(y, deterministic)
    x = x + dropout_layer(cfg)(y, deterministic=deterministic)
    return layers.constrain_activations(x), shared

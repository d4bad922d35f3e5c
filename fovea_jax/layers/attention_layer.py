"""Multi-head attention in the T5 layout with a pluggable attention scheme.

Projections (query, key, value, out) live here; what happens between them (dense,
local, fovea, ...) is the `scheme` module, built from `scheme_factory` so that
adding a scheme never adds a flag to this class. T5 folds
1/sqrt(head_dim) into the query init, so schemes are called with scale 1.
"""
import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax.numpy as jnp

from fovea_jax.layers import initializers
from fovea_jax.layers.dense import DenseGeneral
from fovea_jax.layers.schemes.base import AttentionInputs
from fovea_jax.layers.sharding import HEADS_AXES, constrain_activations
from fovea_jax.sharding import axis_names as ax


class MultiHeadAttention(nn.Module):
  """q from `inputs_q`, k/v from `inputs_kv`, `scheme_factory(name=...)` between.

  num_kv_heads (default num_heads) < num_heads gives grouped-query attention.
  """
  num_heads: int
  head_dim: int
  scheme_factory: Callable[..., nn.Module]
  num_kv_heads: Optional[int] = None
  dtype: Any = jnp.float32
  implementation: Optional[str] = None

  @nn.compact
  def __call__(self, inputs_q, inputs_kv, *, key_mask=None, position_bias=None,
               stack_tables=None, q_segment_ids=None, kv_segment_ids=None,
               bidirectional_prefix=None, decode: bool = False):
    kv_heads = self.num_kv_heads or self.num_heads
    if self.num_heads % kv_heads:
      raise ValueError(f'num_heads ({self.num_heads}) must be a multiple of '
                       f'num_kv_heads ({kv_heads}).')
    kernel_axes = (ax.EMBED, ax.HEADS, ax.KV)
    # T5: variance 1/(embed * head_dim) for the query, i.e. the usual fan-in
    # init with attention's 1/sqrt(head_dim) folded in; schemes use scale 1.
    query_init = initializers.t5_kernel_init(1.0 / self.head_dim, (0,))
    projection = functools.partial(DenseGeneral, axis=-1, kernel_axes=kernel_axes,
                                   dtype=self.dtype)
    query = projection((self.num_heads, self.head_dim), kernel_init=query_init,
                       name='query')(inputs_q)
    key_proj = projection((kv_heads, self.head_dim), name='key')
    value_proj = projection((kv_heads, self.head_dim), name='value')
    key, value = key_proj(inputs_kv), value_proj(inputs_kv)
    query = constrain_activations(query, HEADS_AXES)
    key = constrain_activations(key, HEADS_AXES)
    value = constrain_activations(value, HEADS_AXES)

    scheme_inputs = AttentionInputs(
        key_mask=key_mask, position_bias=position_bias,
        stack_tables=stack_tables or {}, q_segment_ids=q_segment_ids,
        kv_segment_ids=kv_segment_ids, inputs=inputs_kv,
        project_kv=lambda x: (key_proj(x), value_proj(x)), decode=decode,
        implementation=self.implementation,
        bidirectional_prefix=bidirectional_prefix)
    out = self.scheme_factory(name='scheme')(query, key, value, scheme_inputs)
    return DenseGeneral(inputs_q.shape[-1], axis=(-2, -1),
                        kernel_axes=(ax.HEADS, ax.KV, ax.EMBED), dtype=self.dtype,
                        name='out')(out)

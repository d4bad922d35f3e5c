"""The T5 relative-position table, created once per stack and shared by its layers.

The first layer of a stack owns the table `[num_buckets, heads]`; it returns an
`attention.RelativePositionBias` that every layer (and every attention scheme)
evaluates from positions, so no `[length, length]` bias is ever materialised here.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax.linen import partitioning as nn_partitioning

from fovea_jax import attention
from fovea_jax.sharding import axis_names as ax


class RelativePositionBiasTable(nn.Module):
  """Owns `rel_embedding [num_buckets, heads]` with axes (relpos_buckets, heads)."""
  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128
  bidirectional: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self) -> attention.RelativePositionBias:
    table = nn_partitioning.param_with_axes(
        'rel_embedding',
        nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform'),
        (self.num_buckets, self.num_heads), jnp.float32,
        axes=(ax.RELPOS_BUCKETS, ax.HEADS))
    return attention.RelativePositionBias(
        table=jnp.asarray(table, self.dtype), num_buckets=self.num_buckets,
        max_distance=self.max_distance, bidirectional=self.bidirectional)

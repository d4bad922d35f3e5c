"""Fast Multipole Attention as a scheme module, with learned downsampling.

`downsample='grouped_conv'` owns, per level l and separately for keys and values,
a depthwise strided filter `[group_size_l, head_dim, rank]` (shared by heads):
coarse entry r of a group is sum_u W[u, :, r] * k[group start + u]. Filters exist
up to `max_length` (parameter count grows with it) and start as the plain window
mean, so an untrained learned FMA equals `'avg'`. Decoding (causal) accumulates
each new token into its group's entries on every level: O(levels * rank) work.
"""
import math

import gin
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax.linen import partitioning as nn_partitioning

from fovea_jax import attention
from fovea_jax.attention import common as attention_common
from fovea_jax.attention import fma as fma_lib
from fovea_jax.layers.schemes import base
from fovea_jax.layers.schemes import pyramid_cache
from fovea_jax.sharding import axis_names as ax

FILTER_AXES = (ax.DOWNSAMPLE_WINDOW, ax.KV, ax.DOWNSAMPLE_RANK)


def window_mean_filter(rank):
  """Init [group, head_dim, rank]: entry r averages the r-th window of the group."""
  def init(key, shape, dtype=jnp.float32):
    del key
    group, head_dim, _ = shape
    window = group // rank
    owner = np.arange(group) // window                        # [group]
    weights = (owner[:, None] == np.arange(rank)[None]) / window
    return jnp.asarray(np.broadcast_to(weights[:, None, :], shape), dtype)
  return init


@gin.configurable
class Fma(base.Scheme):
  """Fast Multipole Attention (docs/attention.md); `grouped_conv` learns filters
  up to `max_length`."""
  scheme_name = 'fma'
  fine_len: int = 128
  rank: int = 16
  downsample: str = fma_lib.DEFAULT_DOWNSAMPLE
  max_length: int = 16384

  @nn.nowrap
  def layout(self, length, causal):
    return attention.fma_layout(length, fine_len=self.fine_len, rank=self.rank,
                                downsample=self.downsample, causal=causal)

  def _filters(self, head_dim):
    """{level: (key_filter, value_filter)} for every level up to max_length."""
    if self.downsample != 'grouped_conv':
      return None
    filters = {}
    for lvl in attention.fma_levels(self.max_length, self.fine_len, self.rank):
      shape = (lvl.group_size, head_dim, self.rank)
      filters[lvl.level] = tuple(
          nn_partitioning.param_with_axes(
              f'{part}_filter_{lvl.level}', window_mean_filter(self.rank), shape,
              jnp.float32, axes=FILTER_AXES)
          for part in ('key', 'value'))
    return filters

  @nn.compact
  def __call__(self, query, key, value, inputs: base.AttentionInputs):
    attention_common.check_choice('downsample', self.downsample,
                                  fma_lib.DOWNSAMPLES)
    segment_ids = base.self_attention_segment_ids(self.scheme_name, inputs)
    filters = self._filters(key.shape[-1])
    if inputs.decode:
      cache = base.kv_cache_step(self, key, value)
      max_len = self.get_variable('cache', 'cached_key').shape[1]
      levels = self._levels(max_len)
      sums = {lvl.level: pyramid_cache.declare(self, f'level{lvl.level}',
                                               lvl.num_entries)
              for lvl in levels}
      if cache is not None:
        return self._step(query, key, value, cache, levels, sums, filters)
    self._levels(query.shape[1])  # filters reach this length
    return attention.fma_attention(
        query, key, value, fine_len=self.fine_len, rank=self.rank,
        downsample=self.downsample, level_filters=filters,
        causal=self.causal, scale=1.0, key_mask=inputs.key_mask,
        segment_ids=segment_ids, implementation=inputs.implementation)

  def _levels(self, length):
    levels = attention.fma_levels(length, self.fine_len, self.rank)
    if self.downsample == 'grouped_conv' and length > self.max_length:
      raise ValueError(
          f'FMA grouped_conv has filters up to max_length={self.max_length} but '
          f'got length {length}; raise fma.Fma.max_length (it adds params).')
    return levels

  def _step(self, query, key, value, cache, levels, sums, filters):
    if not self.causal:
      raise ValueError('incremental decoding of FMA is causal only.')
    t, fine = cache.index, self.fine_len
    i = t // fine
    # Near field: fine blocks i - 1 and i, up to and including the query.
    raw = (i - 1) * fine + jnp.arange(2 * fine)
    bank_k = [base.gather_positions(cache.key, raw)]
    bank_v = [base.gather_positions(cache.value, raw)]
    allowed = [(raw >= 0) & (raw <= t)]
    entry_bias = [jnp.zeros(raw.shape)]
    for lvl in levels:
      key_sums, value_sums = sums[lvl.level]
      if filters is None:  # window sums, read as means
        pyramid_cache.add(key_sums, t // lvl.window, key)
        pyramid_cache.add(value_sums, t // lvl.window, value)
        scale = 1.0 / lvl.window
      else:  # this token's contribution to the rank entries of its group
        group, offset = t // lvl.group_size, t % lvl.group_size
        for sums_var, x, w in ((key_sums, key, filters[lvl.level][0]),
                               (value_sums, value, filters[lvl.level][1])):
          tap = jnp.take(w, offset, axis=0)                    # [head_dim, rank]
          contribution = jnp.einsum('bqhd,dr->brhd', x.astype(jnp.float32), tap)
          slots = group * self.rank + jnp.arange(self.rank)
          sums_var.value = sums_var.value.at[:, slots].add(contribution)
        scale = 1.0
      # Far field, left side: groups {g-2} (g even) or {g-3, g-2} (g odd).
      g = t // lvl.group_size
      first = jnp.where(g % 2 == 1, g - 3, g - 2)
      groups = first + jnp.arange(2)
      groups_ok = (groups >= 0) & (groups <= g - 2)
      entries = (groups[:, None] * self.rank +
                 jnp.arange(self.rank)[None]).reshape(-1)
      bank_k.append((base.gather_positions(key_sums.value, entries) * scale
                     ).astype(cache.key.dtype))
      bank_v.append((base.gather_positions(value_sums.value, entries) * scale
                     ).astype(cache.value.dtype))
      allowed.append(jnp.repeat(groups_ok, self.rank))
      entry_bias.append(jnp.full(entries.shape, math.log(lvl.window)))
    return base.step_attention(
        query, jnp.concatenate(bank_k, 1), jnp.concatenate(bank_v, 1),
        allowed=jnp.concatenate(allowed), entry_bias=jnp.concatenate(entry_bias))

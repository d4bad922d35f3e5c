"""Local attention (sliding window or same-block) as a scheme module.

Serves LongT5's local attention (window = local_radius, bidirectional) and the
sparse layers of the MASFormer schedule (sliding window or block-local).
"""
from typing import Optional

import gin
import flax.linen as nn
import jax.numpy as jnp

from fovea_jax import attention
from fovea_jax.layers.schemes import base


@gin.configurable
class Local(base.Scheme):
  """Exactly one of `window` (|i-j| <= window) or `block_len` (same block).

  LongT5's local attention is `window = local_radius = 127`.
  """
  scheme_name = 'local'
  window: Optional[int] = 127
  block_len: Optional[int] = None

  def _check(self):
    if (self.window is None) == (self.block_len is None):
      raise ValueError('local.Local needs exactly one of window or block_len '
                       f'(set the other to None), got window={self.window}, '
                       f'block_len={self.block_len}.')

  @nn.nowrap
  def layout(self, length, causal):
    self._check()
    return attention.local_layout(length, window=self.window,
                                  block_len=self.block_len, causal=causal)

  @nn.compact
  def __call__(self, query, key, value, inputs: base.AttentionInputs):
    self._check()
    segment_ids = base.self_attention_segment_ids(self.scheme_name, inputs)
    if inputs.decode:
      cache = base.kv_cache_step(self, key, value)
      if cache is not None:
        # Only the window (or block) is read: O(window) work per token.
        t = cache.index
        if self.window is not None:
          positions = t - self.window + jnp.arange(self.window + 1)
        else:
          positions = t // self.block_len * self.block_len + jnp.arange(
              self.block_len)
        return base.step_attention(
            query, base.gather_positions(cache.key, positions),
            base.gather_positions(cache.value, positions),
            allowed=(positions >= 0) & (positions <= t),
            relative_position=positions - t,
            position_bias=inputs.position_bias)
    return attention.local_attention(
        query, key, value, window=self.window, block_len=self.block_len,
        causal=self.causal, scale=1.0, key_mask=inputs.key_mask,
        position_bias=inputs.position_bias, segment_ids=segment_ids,
        implementation=inputs.implementation)

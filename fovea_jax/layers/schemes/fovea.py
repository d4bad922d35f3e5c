"""Fovea attention as a scheme module, with O(log n) cached decoding.

The full pass calls `attention.fovea_attention`. Decoding (causal) keeps running
sums of keys and values over aligned cells (`sum_grid`: 2^p tokens for a level
p whose windows divide a block, a block's gcd with 2^p beyond); a decoded token
reads its raw neighbour blocks from the KV cache and the windows of its left
nodes (fixed on the host by `fovea_nodes`) as whole cells of the sums.
"""
import functools
import math
from typing import Optional

import gin
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from fovea_jax import attention
from fovea_jax.attention import fovea as fovea_lib
from fovea_jax.layers.schemes import base
from fovea_jax.layers.schemes import pyramid_cache


# First block of an absent node: far enough left that all its windows are < 0.
_NO_NODE = -(1 << 20)


@functools.lru_cache(maxsize=32)
def causal_decode_plan(max_len, block_len, wing, edge, max_level):
  """Per pooled level p: `firsts[num_blocks, nodes]` first block of each node."""
  num_blocks = -(-max_len // block_len)
  per_block = [fovea_lib.fovea_nodes(s, num_blocks, wing=wing, edge=edge,
                                     max_level=max_level, causal=True)
               for s in range(num_blocks)]
  levels = sorted({lvl for nodes in per_block for lvl, _ in nodes if lvl})
  plan = {}
  for level in levels:
    width = max(sum(1 for lvl, _ in nodes if lvl == level) for nodes in per_block)
    firsts = np.full((num_blocks, width), _NO_NODE, np.int32)
    for s, nodes in enumerate(per_block):
      mine = [first for lvl, first in nodes if lvl == level]
      firsts[s, :len(mine)] = mine
    plan[level] = firsts
  return plan


def sum_grid(level, block_len):
  """The cell of the running sums that level `level`'s windows are made of.

  A level-p node starting at block b has windows of 2^p tokens starting at
  b * block_len + w * 2^p: every start is a multiple of gcd(block_len, 2^p), so
  a window is 2^p / grid whole cells of that grid (one cell while 2^p divides
  block_len; several for the wide windows of far levels).
  """
  return math.gcd(block_len, 2 ** level)


@gin.configurable
class Fovea(base.Scheme):
  """Fovea attention (He et al. 2023; docs/attention.md); paper: block_len 128,
  wing 1."""
  scheme_name = 'fovea'
  block_len: int = 128
  wing: int = fovea_lib.DEFAULT_WING
  edge: str = fovea_lib.DEFAULT_EDGE
  coarse_weight: str = fovea_lib.DEFAULT_COARSE_WEIGHT
  max_level: Optional[int] = None

  @nn.nowrap
  def layout(self, length, causal):
    return attention.fovea_layout(
        length, block_len=self.block_len, wing=self.wing, edge=self.edge,
        coarse_weight=self.coarse_weight, max_level=self.max_level,
        causal=causal)

  @nn.compact
  def __call__(self, query, key, value, inputs: base.AttentionInputs):
    segment_ids = base.self_attention_segment_ids(self.scheme_name, inputs)
    if inputs.decode:
      cache = base.kv_cache_step(self, key, value)
      max_len = self.get_variable('cache', 'cached_key').shape[1]
      plan = causal_decode_plan(max_len, self.block_len, self.wing, self.edge,
                                self.max_level)
      grids = sorted({sum_grid(level, self.block_len) for level in plan})
      sums = {grid: pyramid_cache.declare(self, f'grid{grid}',
                                          -(-max_len // grid))
              for grid in grids}
      if cache is not None:
        return self._step(query, key, value, cache, plan, sums, inputs)
    return attention.fovea_attention(
        query, key, value, block_len=self.block_len, wing=self.wing,
        edge=self.edge, coarse_weight=self.coarse_weight,
        max_level=self.max_level, causal=self.causal, scale=1.0,
        key_mask=inputs.key_mask, position_bias=inputs.position_bias,
        segment_ids=segment_ids, implementation=inputs.implementation)

  def _step(self, query, key, value, cache, plan, sums, inputs):
    if not self.causal:
      raise ValueError('incremental decoding of fovea attention is causal only.')
    t, block = cache.index, self.block_len
    s = t // block
    # Raw level 0: blocks s - wing .. s, up to and including the query itself.
    raw = (s - self.wing) * block + jnp.arange((self.wing + 1) * block)
    bank_k = [base.gather_positions(cache.key, raw)]
    bank_v = [base.gather_positions(cache.value, raw)]
    allowed = [(raw >= 0) & (raw <= t)]
    entry_bias = [jnp.zeros(raw.shape)]
    relative = [raw - t]
    for grid, (key_sums, value_sums) in sums.items():
      pyramid_cache.add(key_sums, t // grid, key)
      pyramid_cache.add(value_sums, t // grid, value)
    for level, firsts in plan.items():
      size, grid = 2 ** level, sum_grid(level, block)
      key_sums, value_sums = sums[grid]
      node_first = jnp.asarray(firsts)[s]                     # [nodes]
      starts = (node_first[:, None] * block +
                jnp.arange(block)[None] * size).reshape(-1)   # [windows]
      # Every node lies left of the query's own blocks, so its cells are
      # complete; cells before token 0 (a clipped node) hold no tokens.
      cells = starts[:, None] // grid + jnp.arange(size // grid)[None]
      present = (cells >= 0).astype(jnp.float32)              # [windows, cells]
      count = present.sum(-1) * grid                          # tokens per window
      denom = jnp.maximum(count, 1.0)

      def window_means(sums_var):
        gathered = base.gather_positions(sums_var.value, cells.reshape(-1))
        gathered = gathered.reshape(
            gathered.shape[:1] + cells.shape + gathered.shape[2:])
        return ((gathered * present[None, :, :, None, None]).sum(2) /
                denom[None, :, None, None])

      bank_k.append(window_means(key_sums).astype(cache.key.dtype))
      bank_v.append(window_means(value_sums).astype(cache.value.dtype))
      allowed.append(count > 0)
      # As the full pass: pooled entries weigh log(tokens) unless 'once'.
      entry_bias.append(jnp.zeros(count.shape) if self.coarse_weight == 'once'
                        else jnp.log(denom))
      relative.append(starts + size - 1 - t)  # nearest token: its last
    return base.step_attention(
        query, jnp.concatenate(bank_k, 1), jnp.concatenate(bank_v, 1),
        allowed=jnp.concatenate(allowed), entry_bias=jnp.concatenate(entry_bias),
        relative_position=jnp.concatenate(relative),
        position_bias=inputs.position_bias)

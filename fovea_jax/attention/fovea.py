"""Fovea attention (He et al. 2023): a multi-scale tree over key blocks.

A query block sees its neighbouring blocks at full resolution and farther blocks as
progressively coarser window means (docs/attention.md#fovea). This module owns the node
rules (`fovea_nodes`), the dense oracle (`fovea_attention_reference`) and the static
TreeLayout that the efficient paths (XLA gather, Pallas) execute.
"""
from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np

from fovea_jax.attention import common
from fovea_jax.attention import layout as layout_lib

EDGES = ('clip', 'drop')
COARSE_WEIGHTS = ('once', 'count')
# The paper's settings, the defaults of every function here and of the scheme
# module's fields (layers/schemes/fovea.py): one place for each value.
DEFAULT_WING = 1
DEFAULT_EDGE = 'clip'
DEFAULT_COARSE_WEIGHT = 'once'


def fovea_nodes(block, num_blocks, *, wing=DEFAULT_WING, edge=DEFAULT_EDGE,
                max_level=None, causal=False):
  """`(level, first_block)` of every node query block `block` attends to.

  Level 0 nodes are single raw blocks; a level-p node covers 2^p blocks. Distance
  bands: level 0 covers |d| <= wing, level p >= 1 covers
  wing*(2^p - 1) < |d| <= wing*(2^(p+1) - 1) with `wing` nodes per side; beyond
  `max_level` further level-max_level nodes continue the band. Causal: only the
  left side (and level 0 up to the block itself).
  """
  nodes = [(0, b) for b in range(max(block - wing, 0),
                                 min(block if causal else block + wing,
                                     num_blocks - 1) + 1)]
  for side in ((-1,) if causal else (-1, 1)):
    reach = block if side < 0 else num_blocks - 1 - block
    distance, level = wing + 1, 1  # first block distance not covered yet
    while distance <= reach:
      capped = max_level is not None and level > max_level
      size = 2 ** (max_level if capped else level)
      for _ in range(1 if capped else wing):
        if distance > reach:
          break
        first = block + distance if side > 0 else block - distance - size + 1
        inside = first >= 0 and first + size - 1 <= num_blocks - 1
        if edge == 'clip' or inside:
          nodes.append((int(math.log2(size)), first))
        distance += size
      level += 1
  return nodes


def fovea_level_map(num_blocks, *, wing=DEFAULT_WING, edge=DEFAULT_EDGE,
                    max_level=None, causal=False):
  """`[query_block, key_block]` level (-1 = never seen) and node first block."""
  levels = np.full((num_blocks, num_blocks), -1, np.int32)
  firsts = np.zeros((num_blocks, num_blocks), np.int32)
  for s in range(num_blocks):
    for level, first in fovea_nodes(s, num_blocks, wing=wing, edge=edge,
                                    max_level=max_level, causal=causal):
      blocks = np.arange(max(first, 0), min(first + 2 ** level, num_blocks))
      levels[s, blocks] = level
      firsts[s, blocks] = first
  return levels, firsts


def _check_args(block_len, wing, edge, coarse_weight, max_level):
  common.check_positive_int('block_len', block_len)
  common.check_positive_int('wing', wing)
  common.check_choice('edge', edge, EDGES)
  common.check_choice('coarse_weight', coarse_weight, COARSE_WEIGHTS)
  if max_level is not None and (not isinstance(max_level, int) or max_level < 0):
    raise ValueError(f'max_level must be None or an integer >= 0, got {max_level!r}.')


def fovea_attention_reference(q, k, v, *, block_len, wing=DEFAULT_WING,
                              edge=DEFAULT_EDGE,
                              coarse_weight=DEFAULT_COARSE_WEIGHT,
                              max_level=None, causal=False, scale=None,
                              key_mask=None, position_bias=None,
                              segment_ids=None):
  """Dense oracle (docs/attention.md#fovea): every key replaced by its window mean.

  `segment_ids [batch, n]` (packed examples): a query sees only keys of its
  own segment, and a window's mean is over the window's tokens of the query's
  segment (docs/attention.md#packed-examples).
  """
  _check_args(block_len, wing, edge, coarse_weight, max_level)
  common.check_qkv(q, k, v, same_length=True)
  batch, n, heads, _ = q.shape
  scale = common.default_scale(scale, q.shape[-1])
  num_blocks = -(-n // block_len)
  levels, firsts = fovea_level_map(num_blocks, wing=wing, edge=edge,
                                   max_level=max_level, causal=causal)
  token = np.arange(n)
  key_block = token // block_len
  level = levels[:, key_block]                       # [query_block, key]
  width = 2 ** np.maximum(level, 0)
  node_start = firsts[:, key_block] * block_len
  window_start = node_start + (token - node_start) // width * width
  member = ((token[None, None, :] >= window_start[..., None]) &
            (token[None, None, :] < (window_start + width)[..., None]))
  valid = common.valid_keys(key_mask, batch, n, n).astype(jnp.float32)
  query_block = token // block_len
  if segment_ids is None:
    same = jnp.ones((1, n, n), jnp.float32)
  else:
    same = (segment_ids[:, :, None] == segment_ids[:, None, :]).astype(
        jnp.float32)                                  # [batch, query, key']
  # [batch, query, key, key']: the tokens whose mean stands in for key.
  averaging = (jnp.asarray(member, jnp.float32)[query_block][None] *
               (valid[:, None, :] * same)[:, :, None, :])
  counts_t = averaging.sum(-1)                        # [batch, query, key]
  mean_t = averaging / jnp.maximum(counts_t, 1.0)[..., None]
  k_bar = jnp.einsum('btjJ,bJhd->btjhd', mean_t, k.astype(jnp.float32))
  v_bar = jnp.einsum('btjJ,bJhd->btjhd', mean_t, v.astype(jnp.float32))
  groups = heads // k.shape[2]
  k_bar, v_bar = (jnp.repeat(x, groups, axis=3) for x in (k_bar, v_bar))
  logits = jnp.einsum('bthd,btjhd->bhtj', q.astype(jnp.float32), k_bar) * scale
  seen = (level >= 0)[query_block]
  if causal:
    seen = seen & (token[None, :] <= token[:, None])
  # Only valid tokens (of the query's segment) are expanded: n_j copies of
  # each window mean.
  allowed = seen[None] & (valid[:, None, :n] * same > 0)
  correction = (-jnp.log(jnp.maximum(counts_t, 1.0)) if coarse_weight == 'once'
                else jnp.zeros_like(counts_t))
  logits = logits + jnp.where(allowed, correction, common.MASKED)[:, None]
  if position_bias is not None:
    lo = np.maximum(window_start, 0)[query_block]
    hi = (np.minimum(window_start + width, n) - 1)[query_block]
    t = token[:, None]
    rel = np.where(t < lo, lo - t, np.where(t > hi, hi - t, 0))
    logits = logits + jnp.transpose(position_bias.bias(jnp.asarray(rel)),
                                    (2, 0, 1))[None]
  weights = common.safe_softmax_weights(logits)
  return jnp.einsum('bhtj,btjhd->bthd', weights, v_bar).astype(v.dtype)


def fovea_layout(length, *, block_len, wing=DEFAULT_WING, edge=DEFAULT_EDGE,
                 coarse_weight=DEFAULT_COARSE_WEIGHT,
                 max_level=None, causal=False,
                 packed=False) -> layout_lib.TreeLayout:
  """The cached TreeLayout of fovea attention for one configuration.

  `packed` (bidirectional only): every coarse level also in a 'head' copy, which
  the nodes after a query block read (see `PyramidSegment.side`).
  """
  _check_args(block_len, wing, edge, coarse_weight, max_level)
  return _fovea_layout(int(length), int(block_len), int(wing), edge, coarse_weight,
                       max_level, bool(causal), bool(packed) and not causal)


def _node_windows(level, first, block_len, length):
  """Trimmed `[e_lo, e_hi)` of a node's windows that touch the sequence."""
  size = 2 ** level
  starts = first * block_len + np.arange(block_len) * size
  touching = np.nonzero((starts + size > 0) & (starts < length))[0]
  if touching.size == 0:
    return None
  return int(touching[0]), int(touching[-1]) + 1


@functools.lru_cache(maxsize=64)
def _fovea_layout(length, block_len, wing, edge, coarse_weight, max_level, causal,
                  head_copies):
  num_blocks = -(-length // block_len)
  token_length = num_blocks * block_len
  per_block, starts_of_level = [], {}
  for s in range(num_blocks):
    nodes = []
    for level, first in fovea_nodes(s, num_blocks, wing=wing, edge=edge,
                                    max_level=max_level, causal=causal):
      trimmed = _node_windows(level, first, block_len, length)
      if trimmed is None:
        continue
      nodes.append((level, first, *trimmed))
      if level:
        size = 2 ** level
        lo_start = first * block_len + trimmed[0] * size
        hi_start = first * block_len + (trimmed[1] - 1) * size
        old = starts_of_level.get(level, (lo_start, hi_start))
        starts_of_level[level] = (min(old[0], lo_start), max(old[1], hi_start))
    per_block.append(nodes)

  correction = 'none' if coarse_weight == 'once' else 'log_count'
  levels = sorted(starts_of_level)
  specs = [(1, 1, 0, token_length, 'none')]
  for level in levels:
    size = 2 ** level
    grid = math.gcd(block_len, size)
    lo_start, hi_start = starts_of_level[level]
    specs.append((size, grid, lo_start, (hi_start - lo_start) // grid + 1,
                  correction))
  segment_of_level = {level: i + 1 for i, level in enumerate(levels)}
  if head_copies:
    specs += [spec + ('head',) for spec in specs[1:]]

  def spans(block, segments):
    out = []
    for level, first, e_lo, e_hi in per_block[block]:
      if level == 0:
        out.append((segments[0].offset + first * block_len + e_lo, e_hi - e_lo))
        continue
      after = head_copies and first > block
      seg = segments[segment_of_level[level] + (len(levels) if after else 0)]
      start = first * block_len + e_lo * seg.window
      out.append((int(seg.flat_index((start - seg.first_start) // seg.grid)),
                  e_hi - e_lo))
    return out

  return layout_lib.make_layout(
      length=length, query_block=block_len, token_length=token_length,
      segment_specs=specs, spans_of_block=spans, causal=causal)


def average_unseen_blocks(num_blocks, **options):
  """Mean number of key blocks a query block never sees (docs/attention.md#fovea: 41.7 at 16k/128)."""
  levels, _ = fovea_level_map(num_blocks, **options)
  return float((levels < 0).sum(axis=1).mean())

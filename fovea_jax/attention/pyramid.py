"""The flat key/value buffer of a TreeLayout: raw tokens plus pooled levels.

Differentiable jnp: gradients flow from the attention output through the window
means back to k and v (and to learned coarse levels handed in by a Flax module).
Pooling is exact summation (aligned reshape-sums, then pairwise doubling for windows
wider than the grid), never prefix-sum differences, so long sequences keep float32
accuracy.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from fovea_jax.attention.common import MASKED
from fovea_jax.attention.common import pad_length
from fovea_jax.attention.common import pad_segment_ids
from fovea_jax.attention.layout import PyramidSegment
from fovea_jax.attention.layout import TreeLayout


def _edge_pad(ids, widths):
  return jnp.pad(ids, widths, mode='edge') if any(sum(w) for w in widths) else ids


def _cells(seg: PyramidSegment, token_length):
  """`(left, begin)`: grid cells padded before the sequence, and the first cell
  of the segment's windows in padded coordinates."""
  left = max(0, -seg.first_start // seg.grid)
  return left, seg.first_start // seg.grid + left


def _window_sums(x, seg: PyramidSegment, token_length, segment_ids=None):
  """Sums of `x [batch, token_length, ...]` over the segment's windows, start order.

  With `segment_ids [batch, token_length]` (packed examples, runs of equal ids)
  a window sums only the tokens of the segment of its last (`seg.side ==
  'tail'`) or first ('head') token; returns `(sums, those segments' ids)`.
  Positions outside the sequence take the id of the nearest token, so they
  never split a run (their `x` is zero).
  """
  batch, rest = x.shape[0], x.shape[2:]
  cells = token_length // seg.grid
  tokens = x.reshape(batch, cells, seg.grid, *rest)
  if segment_ids is None:
    base = tokens.sum(axis=2)
  else:
    ids = segment_ids.reshape(batch, cells, seg.grid)
    first, last = ids[..., 0], ids[..., -1]
    own = ids == (last if seg.side == 'tail' else first)[..., None]
    base = jnp.where(own.reshape(own.shape + (1,) * len(rest)), tokens,
                     0).sum(axis=2)
  # Index of start i in `base` coordinates is first_start/grid + i; pad so that all
  # windows (which may start before 0 or end after the sequence) are in range.
  left, begin = _cells(seg, token_length)
  needed = seg.first_start // seg.grid + seg.num_starts - 1 + seg.interleave
  right = max(0, needed - base.shape[1])
  widths = [(0, 0), (left, right)]
  base = jnp.pad(base, widths + [(0, 0)] * len(rest))
  take = slice(begin, begin + seg.num_starts + seg.interleave - 1)
  sums = base[:, take]
  if segment_ids is not None:
    first, last = (_edge_pad(a, widths)[:, take] for a in (first, last))
  width = 1
  while width < seg.interleave:  # windows of 2*width grid cells from two of width
    left_half, right_half = sums[:, :-width], sums[:, width:]
    if segment_ids is None:
      sums = left_half + right_half
    else:
      # Runs are contiguous: the two halves share the window's segment only
      # if the half away from that end is entirely of it.
      first_l, last_l = first[:, :-width], last[:, :-width]
      first_r, last_r = first[:, width:], last[:, width:]
      if seg.side == 'tail':
        join = (last_l == last_r) & (first_r == last_r)
        near, far = right_half, left_half
      else:
        join = (first_l == last_l) & (first_l == first_r)
        near, far = left_half, right_half
      join = join.reshape(join.shape + (1,) * len(rest))
      sums = near + jnp.where(join, far, 0)
      first, last = first_l, last_r
    width *= 2
  if segment_ids is None:
    return sums[:, :seg.num_starts]
  ids = last if seg.side == 'tail' else first
  return sums[:, :seg.num_starts], ids[:, :seg.num_starts]


def _residue_major(x, seg: PyramidSegment, fill=0.0):
  """Reorders start-order entries so that every node is a contiguous span."""
  if seg.interleave == 1:
    return x
  widths = [(0, 0), (0, seg.size - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
  x = jnp.pad(x, widths, constant_values=fill)
  rest = x.shape[2:]
  x = x.reshape(x.shape[0], seg.row_len, seg.interleave, *rest)
  x = jnp.swapaxes(x, 1, 2)
  return x.reshape(x.shape[0], seg.size, *rest)


def _entry_logit_correction(seg: PyramidSegment, counts):
  if seg.logit_correction == 'none':
    correction = jnp.zeros_like(counts)
  elif seg.logit_correction == 'log_count':
    correction = jnp.log(jnp.maximum(counts, 1.0))
  elif seg.logit_correction == 'log_window':
    correction = jnp.full_like(counts, np.log(seg.window))
  else:
    raise AssertionError(seg.logit_correction)
  return jnp.where(counts > 0, correction, MASKED)


def build_flat_kv(layout: TreeLayout, k, v, valid, coarse_levels=None,
                  segment_ids=None):
  """Returns `(k_flat, v_flat, entry_bias)` for `layout`.

  k, v: `[batch, length, kv_heads, head_dim]`; valid: `[batch, length]` bool.
  coarse_levels: optional `{segment_index: (k_level, v_level)}` replacing pooled
  means by learned coarse entries (start order, `[batch, num_starts, kv_heads,
  head_dim]`). entry_bias `[batch, flat_size]` float32: the per-entry logit term,
  -inf for entries with no valid token. segment_ids `[batch, length]` (packed
  examples): each pooled entry is the mean over its window's tokens of one
  segment (`PyramidSegment.side`; `flat_segment_ids` says which), its count
  and log-count correction those tokens'.
  """
  coarse_levels = coarse_levels or {}
  n_tok = layout.token_length
  ids = (None if segment_ids is None else
         pad_segment_ids(segment_ids, n_tok))
  valid = pad_length(valid, n_tok).astype(jnp.float32)
  keep = valid[:, :, None, None]
  k_tok = pad_length(k, n_tok) * keep.astype(k.dtype)
  v_tok = pad_length(v, n_tok) * keep.astype(v.dtype)

  def window_sums(x, seg):
    sums = _window_sums(x, seg, n_tok, ids)
    return sums if ids is None else sums[0]

  k_parts, v_parts, bias_parts = [], [], []
  for index, seg in enumerate(layout.segments):
    if seg.window == 1:
      counts = valid
      k_seg, v_seg = k_tok, v_tok
    else:
      counts = window_sums(valid, seg)
      if index in coarse_levels:
        k_seg, v_seg = coarse_levels[index]
      else:
        denom = jnp.maximum(counts, 1.0)[:, :, None, None]
        k_seg = (window_sums(k_tok.astype(jnp.float32), seg) / denom
                 ).astype(k.dtype)
        v_seg = (window_sums(v_tok.astype(jnp.float32), seg) / denom
                 ).astype(v.dtype)
    k_parts.append(_residue_major(k_seg, seg))
    v_parts.append(_residue_major(v_seg, seg))
    bias_parts.append(
        _residue_major(_entry_logit_correction(seg, counts), seg, fill=MASKED))
  k_flat = jnp.concatenate(k_parts, axis=1)
  v_flat = jnp.concatenate(v_parts, axis=1)
  entry_bias = jnp.concatenate(bias_parts, axis=1)
  return k_flat, v_flat, entry_bias


def flat_segment_ids(layout: TreeLayout, segment_ids):
  """`[batch, flat_size]` int32: the segment every entry of `build_flat_kv`'s
  buffer averages (a raw token's own; a pooled entry's by its `side`)."""
  n_tok = layout.token_length
  ids = pad_segment_ids(segment_ids, n_tok)
  parts = []
  for seg in layout.segments:
    if seg.window == 1:
      entry_ids = ids
    else:
      probe = jnp.zeros(ids.shape, jnp.float32)
      entry_ids = _window_sums(probe, seg, n_tok, ids)[1]
    parts.append(_residue_major(entry_ids, seg, fill=-1))
  return jnp.concatenate(parts, axis=1)

"""The flat key/value buffer of a TreeLayout: raw tokens plus pooled levels.

Differentiable jnp: gradients flow from the attention output through the window
means back to k and v (and to learned coarse levels handed in by a Flax module).
Pooling is exact summation (aligned reshape-sums, then pairwise doubling for windows
wider than the grid), never prefix-sum differences, so long sequences keep float32
accuracy.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from fovea_jax.attention.common import MASKED
from fovea_jax.attention.common import pad_length
from fovea_jax.attention.common import pad_segment_ids
from fovea_jax.attention.layout import PyramidSegment
from fovea_jax.attention.layout import TreeLayout


def _edge_pad(ids, widths):
  return jnp.pad(ids, widths, mode='edge') if any(sum(w) for w in widths) else ids


def _padding(seg: PyramidSegment, cells):
  """`(widths, take)`: padding of the `cells` grid sums so that every window
  (which may start before 0 or end after the sequence) is in range, and the
  slice of the padded cells where window i's first cell is cell i."""
  left = max(0, -seg.first_start // seg.grid)
  begin = seg.first_start // seg.grid + left
  needed = seg.first_start // seg.grid + seg.num_starts - 1 + seg.interleave
  widths = [(0, 0), (left, max(0, needed - cells))]
  return widths, slice(begin, begin + seg.num_starts + seg.interleave - 1)


@dataclasses.dataclass(frozen=True)
class _SegmentedWindows:
  """How a level's windows sum packed examples, from their segment ids alone
  (so that valid counts, keys and values share it): `own [batch, cells,
  grid]`, the tokens of each cell that belong to its window's segment; `joins`,
  per doubling of the window, where the far half lies wholly in that segment;
  `ids [batch, num_starts]`, the segment of every window."""
  own: jax.Array
  joins: Tuple[jax.Array, ...]
  ids: jax.Array


def segmented_windows(seg: PyramidSegment, token_length, segment_ids,
                      cell_ends=None):
  """A window sums only the tokens of the segment of its last (`seg.side ==
  'tail'`) or first ('head') token. Positions outside the sequence take the id
  of the nearest token, so they never split a run (their values are zero).
  `cell_ends`: the `(first, last)` ids `[batch, num_starts + interleave - 1]`
  of the grid cells window i starts at (i ..), where they reach beyond
  `segment_ids` (one device's part of a longer sequence, `context_parallel`)."""
  batch, cells = segment_ids.shape[0], token_length // seg.grid
  ids = segment_ids.reshape(batch, cells, seg.grid)
  first, last = ids[..., 0], ids[..., -1]
  own = ids == (last if seg.side == 'tail' else first)[..., None]
  if cell_ends is None:
    widths, take = _padding(seg, cells)
    first, last = (_edge_pad(a, widths)[:, take] for a in (first, last))
  else:
    first, last = cell_ends
  joins = []
  width = 1
  while width < seg.interleave:  # windows of 2*width cells from two of width
    # Runs are contiguous: the two halves share the window's segment only if
    # the half away from that end is entirely of it.
    first_l, last_l = first[:, :-width], last[:, :-width]
    first_r, last_r = first[:, width:], last[:, width:]
    if seg.side == 'tail':
      joins.append((last_l == last_r) & (first_r == last_r))
    else:
      joins.append((first_l == last_l) & (first_l == first_r))
    first, last = first_l, last_r
    width *= 2
  window_ids = last if seg.side == 'tail' else first
  return _SegmentedWindows(own, tuple(joins), window_ids[:, :seg.num_starts])


def window_sums(x, seg: PyramidSegment, token_length,
                 segmented: Optional[_SegmentedWindows] = None):
  """Sums of `x [batch, token_length, ...]` over the segment's windows, start
  order; with `segmented` (packed examples), over each window's own segment."""
  batch, rest = x.shape[0], x.shape[2:]
  expand = lambda mask: mask.reshape(mask.shape + (1,) * len(rest))
  tokens = x.reshape(batch, token_length // seg.grid, seg.grid, *rest)
  if segmented is None:
    base = tokens.sum(axis=2)
  else:
    base = jnp.where(expand(segmented.own), tokens, 0).sum(axis=2)
  widths, take = _padding(seg, base.shape[1])
  sums = jnp.pad(base, widths + [(0, 0)] * len(rest))[:, take]
  width, step = 1, 0
  while width < seg.interleave:  # windows of 2*width grid cells from two of width
    left_half, right_half = sums[:, :-width], sums[:, width:]
    if segmented is None:
      sums = left_half + right_half
    else:
      near, far = ((right_half, left_half) if seg.side == 'tail'
                   else (left_half, right_half))
      sums = near + jnp.where(expand(segmented.joins[step]), far, 0)
    width, step = width * 2, step + 1
  return sums[:, :seg.num_starts]


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

  k_parts, v_parts, bias_parts = [], [], []
  for index, seg in enumerate(layout.segments):
    if seg.window == 1:
      counts = valid
      k_seg, v_seg = k_tok, v_tok
    else:
      segmented = (None if ids is None else
                   segmented_windows(seg, n_tok, ids))
      counts = window_sums(valid, seg, n_tok, segmented)
      if index in coarse_levels:
        k_seg, v_seg = coarse_levels[index]
      else:
        denom = jnp.maximum(counts, 1.0)[:, :, None, None]
        k_seg, v_seg = (
            (window_sums(x.astype(jnp.float32), seg, n_tok, segmented) / denom
             ).astype(x.dtype) for x in (k_tok, v_tok))
    k_parts.append(_residue_major(k_seg, seg))
    v_parts.append(_residue_major(v_seg, seg))
    bias_parts.append(
        _residue_major(_entry_logit_correction(seg, counts), seg, fill=MASKED))
  k_flat = jnp.concatenate(k_parts, axis=1)
  v_flat = jnp.concatenate(v_parts, axis=1)
  entry_bias = jnp.concatenate(bias_parts, axis=1)
  return k_flat, v_flat, entry_bias


def window_segment_ids(seg: PyramidSegment, token_length, segment_ids):
  """`[batch, num_starts]`: the segment each of `seg`'s windows averages (its
  last token's, or first token's for `seg.side == 'head'`), from ids padded to
  `token_length` (`common.pad_segment_ids`)."""
  return segmented_windows(seg, token_length, segment_ids).ids


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
      entry_ids = window_segment_ids(seg, n_tok, ids)
    parts.append(_residue_major(entry_ids, seg, fill=-1))
  return jnp.concatenate(parts, axis=1)

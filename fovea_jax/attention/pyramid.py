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
from fovea_jax.attention.layout import PyramidSegment
from fovea_jax.attention.layout import TreeLayout


def _window_sums(x, seg: PyramidSegment, token_length):
  """Sums of `x [batch, token_length, ...]` over the segment's windows, start order."""
  batch, rest = x.shape[0], x.shape[2:]
  base = x.reshape(batch, token_length // seg.grid, seg.grid, *rest).sum(axis=2)
  # Index of start i in `base` coordinates is first_start/grid + i; pad so that all
  # windows (which may start before 0 or end after the sequence) are in range.
  left = max(0, -seg.first_start // seg.grid)
  needed = seg.first_start // seg.grid + seg.num_starts - 1 + seg.interleave
  right = max(0, needed - base.shape[1])
  widths = [(0, 0), (left, right)] + [(0, 0)] * len(rest)
  base = jnp.pad(base, widths)
  begin = seg.first_start // seg.grid + left
  sums = base[:, begin:begin + seg.num_starts + seg.interleave - 1]
  width = 1
  while width < seg.interleave:  # windows of 2*width grid cells from two of width
    sums = sums[:, :-width] + sums[:, width:]
    width *= 2
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


def build_flat_kv(layout: TreeLayout, k, v, valid, coarse_levels=None):
  """Returns `(k_flat, v_flat, entry_bias)` for `layout`.

  k, v: `[batch, length, kv_heads, head_dim]`; valid: `[batch, length]` bool.
  coarse_levels: optional `{segment_index: (k_level, v_level)}` replacing pooled
  means by learned coarse entries (start order, `[batch, num_starts, kv_heads,
  head_dim]`). entry_bias `[batch, flat_size]` float32: the per-entry logit term,
  -inf for entries with no valid token.
  """
  coarse_levels = coarse_levels or {}
  n_tok = layout.token_length
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
      counts = _window_sums(valid, seg, n_tok)
      if index in coarse_levels:
        k_seg, v_seg = coarse_levels[index]
      else:
        denom = jnp.maximum(counts, 1.0)[:, :, None, None]
        k_seg = (_window_sums(k_tok.astype(jnp.float32), seg, n_tok) / denom
                 ).astype(k.dtype)
        v_seg = (_window_sums(v_tok.astype(jnp.float32), seg, n_tok) / denom
                 ).astype(v.dtype)
    k_parts.append(_residue_major(k_seg, seg))
    v_parts.append(_residue_major(v_seg, seg))
    bias_parts.append(
        _residue_major(_entry_logit_correction(seg, counts), seg, fill=MASKED))
  k_flat = jnp.concatenate(k_parts, axis=1)
  v_flat = jnp.concatenate(v_parts, axis=1)
  entry_bias = jnp.concatenate(bias_parts, axis=1)
  return k_flat, v_flat, entry_bias

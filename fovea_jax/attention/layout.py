"""Static layouts of tree-level block attention, built on the host.

Fovea, FMA, local and (flash) dense attention are one computation: every query block
of `query_block` tokens attends to a few contiguous *spans* of a flat key/value
buffer, the concatenation of *pyramid segments* (raw tokens, or window means of K/V
at some level). A `TreeLayout` holds everything about that computation that depends
only on lengths and block sizes: the segments, each query block's spans, and the
token window `[lo, hi]` of every flat entry (for relative-position bias, causal and
sliding-window masks). It is pure numpy, computed once per configuration and cached
by the scheme modules; it never looks at a dense mask. The rules that decide
which (query, entry) pairs may attend (`static_entry_mask`) are here too, so
every engine applies the same ones.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class PyramidSegment:
  """One level of pooled keys/values inside the flat buffer.

  Entry `i` (in start order) averages tokens `[first_start + i*grid,
  first_start + i*grid + window)` that lie inside the sequence and are not masked.
  A node of `window`-sized entries has consecutive entries `interleave = window //
  grid` apart in start order; storing the segment residue-major (all starts with
  `i % interleave == 0`, then `== 1`, ...) makes every node a contiguous span.
  """
  window: int
  grid: int
  first_start: int
  num_starts: int
  offset: int
  # How the entry's logit is corrected: 'none' (each entry counts once),
  # 'log_count' (+ln of its valid tokens) or 'log_window' (+ln(window)).
  logit_correction: str = 'none'
  # With packed examples (segment ids) an entry averages only the tokens of one
  # segment: that of its window's last token ('tail', what queries after the
  # window share with it) or first token ('head', for queries before it).
  side: str = 'tail'

  @property
  def interleave(self) -> int:
    return self.window // self.grid

  @property
  def row_len(self) -> int:
    return -(-self.num_starts // self.interleave)

  @property
  def size(self) -> int:
    return self.row_len * self.interleave

  def flat_index(self, start_index: np.ndarray) -> np.ndarray:
    """Flat-buffer position of the entries with these start-order indices."""
    residue, quotient = np.divmod(start_index, self.interleave)[::-1]
    return self.offset + residue * self.row_len + quotient

  def start_tokens(self) -> np.ndarray:
    """Window start token of every flat entry of this segment (row-major rows)."""
    natural = np.arange(self.size)
    residue, quotient = np.divmod(natural, self.row_len)
    start_index = quotient * self.interleave + residue
    return self.first_start + start_index * self.grid, start_index < self.num_starts


@dataclasses.dataclass(frozen=True, eq=False)
class TreeLayout:
  """Everything static about one tree-level block attention call."""
  length: int                 # real sequence length (queries and keys)
  query_block: int            # tokens per query block
  num_query_blocks: int
  token_length: int           # keys padded to this many raw tokens
  segments: tuple             # PyramidSegment, segments[0] is the raw tokens
  span_start: np.ndarray      # [num_query_blocks, max_spans] flat offsets
  span_len: np.ndarray        # [num_query_blocks, max_spans] 0 = unused slot
  causal: bool
  window: Optional[int]       # sliding-window radius (|i - j| <= window) or None
  # `(lo, hi)` of every flat entry given outright instead of derived from the
  # segments: one device's share of a sequence-sharded layout, whose buffer
  # holds the entries its queries read in the coordinates of its queries
  # (`context_parallel`).
  windows: Optional[tuple] = None

  @property
  def flat_size(self) -> int:
    if self.windows is not None:
      return len(self.windows[0])
    last = self.segments[-1]
    return last.offset + last.size

  @functools.cached_property
  def entry_lo_hi(self):
    """`[flat_size]` first and last in-sequence token of every entry's window.

    Entries whose window holds no in-sequence token get lo > hi (they are always
    masked: their valid count is zero).
    """
    if self.windows is not None:
      return self.windows
    lo = np.empty(self.flat_size, np.int32)
    hi = np.empty(self.flat_size, np.int32)
    for seg in self.segments:
      starts, real = seg.start_tokens()
      sl = slice(seg.offset, seg.offset + seg.size)
      lo[sl] = np.where(real, np.maximum(starts, 0), 1)
      hi[sl] = np.where(real, np.minimum(starts + seg.window, self.length) - 1, 0)
    return lo, hi

  @functools.cached_property
  def gather_index(self):
    """`([nq, max_keys] flat index, [nq, max_keys] bool valid)` per query block."""
    totals = self.span_len.sum(axis=1)
    max_keys = max(int(totals.max()), 1)
    index = np.zeros((self.num_query_blocks, max_keys), np.int32)
    valid = np.zeros((self.num_query_blocks, max_keys), bool)
    for block in range(self.num_query_blocks):
      parts = [np.arange(s, s + n) for s, n in
               zip(self.span_start[block], self.span_len[block]) if n]
      if parts:
        idx = np.concatenate(parts)
        index[block, :idx.size] = idx
        valid[block, :idx.size] = True
    return index, valid

  def attended_fraction(self) -> float:
    """Fraction of the dense `[n, n]` score matrix this layout computes."""
    per_block = self.span_len.sum(axis=1).astype(np.float64)
    rows = np.minimum(self.query_block,
                      self.length - np.arange(self.num_query_blocks) *
                      self.query_block)
    return float((per_block * rows).sum() / (self.length * self.length))


def build_segments(specs, token_length):
  """Lays out `(window, grid, first_start, num_starts, correction[, side])`
  specs in order.

  The first spec must be the raw tokens `(1, 1, 0, token_length, 'none')`.
  """
  segments, offset = [], 0
  for window, grid, first_start, num_starts, correction, *side in specs:
    if window % grid or (window // grid) & (window // grid - 1):
      raise AssertionError(f'window {window} must be a power-of-two multiple of '
                           f'grid {grid}')
    seg = PyramidSegment(window, grid, first_start, num_starts, offset, correction,
                         *side)
    segments.append(seg)
    offset += seg.size
  assert segments[0].window == 1 and segments[0].num_starts == token_length
  return tuple(segments)


def trim_spans(spans, lo, hi):
  """Drops entries with no in-sequence token from both ends of every span."""
  kept = []
  for start, length in spans:
    end = start + length
    while start < end and lo[start] > hi[start]:
      start += 1
    while end > start and lo[end - 1] > hi[end - 1]:
      end -= 1
    if end > start:
      kept.append((start, end - start))
  return kept


def make_layout(*, length, query_block, token_length, segment_specs, spans_of_block,
                causal, window=None, query_length=None) -> TreeLayout:
  """Builds a TreeLayout from scheme-specific segments and per-block spans.

  `spans_of_block(block, segments)` returns `(flat_start, num_entries)` pairs.
  `query_length` (default `length`) is the number of queries when it differs
  from the number of keys (cross-attention; non-causal only).
  """
  if query_length is not None and causal:
    raise ValueError('a layout with its own query_length must be non-causal.')
  segments = build_segments(segment_specs, token_length)
  num_query_blocks = -(-(length if query_length is None else query_length) //
                       query_block)
  draft = TreeLayout(length, query_block, num_query_blocks, token_length, segments,
                     np.zeros((num_query_blocks, 1), np.int32),
                     np.zeros((num_query_blocks, 1), np.int32), causal, window)
  lo, hi = draft.entry_lo_hi
  per_block = [trim_spans(spans_of_block(b, segments), lo, hi)
               for b in range(num_query_blocks)]
  max_spans = max(1, max(len(s) for s in per_block))
  span_start = np.zeros((num_query_blocks, max_spans), np.int32)
  span_len = np.zeros((num_query_blocks, max_spans), np.int32)
  for b, spans in enumerate(per_block):
    for i, (start, n) in enumerate(spans):
      span_start[b, i], span_len[b, i] = start, n
  layout = dataclasses.replace(draft, span_start=span_start, span_len=span_len)
  layout.__dict__['entry_lo_hi'] = (lo, hi)  # reuse the cached geometry
  return layout


def array_module(*arrays):
  """numpy for host-side plans (all inputs numpy), jax.numpy inside programs."""
  return np if all(isinstance(a, np.ndarray) for a in arrays) else jnp


def relative_position_to_window(query_pos, lo, hi):
  """Signed distance from a query token to the nearest token of `[lo, hi]`."""
  xp = array_module(query_pos, lo, hi)
  return xp.where(query_pos < lo, lo - query_pos,
                  xp.where(query_pos > hi, hi - query_pos, 0))


def static_entry_mask(query_pos, lo, hi, layout: TreeLayout):
  """True where a (query, entry) pair may attend: causal and window rules."""
  allowed = lo <= hi
  if layout.causal:
    allowed = allowed & (hi <= query_pos)
  if layout.window is not None:
    rel = relative_position_to_window(query_pos, lo, hi)
    allowed = allowed & (abs(rel) <= layout.window)
  return allowed

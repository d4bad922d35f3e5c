"""Host-side tile tables of the tree-level Pallas kernels.

A `TreeLayout` says which flat K/V spans each query block attends to. The kernels
need that as small int32 tables, built here with numpy at trace time (never from a
dense mask) and cached per (layout, tile sizes):

* forward / dq: for each layout query block, its spans cut into key tiles of
  `block_k` entries, `(flat start, used entries [used_lo, used_hi))`, in CSR form
  (`row_ptr`), and every tile's entry windows `[lo, hi]` as a row (unused
  entries get lo > hi, i.e. never attended), so kernels read them with a row
  index instead of unaligned lane slices (which Mosaic cannot do). With
  `align > 1` (TPU) tile starts are rounded down to a multiple of `align` so
  K/V loads start on a sublane-tile boundary; the extra entries are unused.
* dk / dv: the transposed table. The flat buffer is cut into *aligned* key tiles of
  `block_k_dkv` entries so that every program owns (and writes) one disjoint tile;
  for each tile it lists the query blocks that use it and which entries of the
  tile they use (`[entry_lo, entry_hi)`), so the backward pass revisits exactly the
  (query block, entry) pairs of the forward pass.
* TPU grid steps (`step_tables`): the TPU kernels stream K/V and q/dO tiles from
  HBM, so their last grid axis walks a flat list of (output tile, input tile)
  steps and the BlockSpec index maps read from it which tiles to fetch.
* bias pieces: T5's bucket of a relative position is piecewise constant, so the
  bias is evaluated in-kernel as a few range compares (no gathers, no logarithms).
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from fovea_jax.attention.layout import TreeLayout


def next_power_of_2(x: int) -> int:
  return 1 if x <= 1 else 1 << (int(x) - 1).bit_length()


@dataclasses.dataclass(frozen=True, eq=False)
class QueryTiling:
  """How layout query blocks map onto kernel query tiles of `tile` rows.

  Triton needs power-of-two tiles, so a layout block of `query_block` queries
  becomes `sub_tiles` kernel tiles (the last one padded with masked rows).
  """
  query_block: int
  tile: int
  sub_tiles: int
  num_query_blocks: int

  @property
  def num_tiles(self) -> int:
    return self.num_query_blocks * self.sub_tiles

  @property
  def padded_length(self) -> int:
    return self.num_tiles * self.tile


@dataclasses.dataclass(frozen=True, eq=False)
class TileTables:
  """Every static table one kernel call needs (numpy int32 arrays)."""
  tiling: QueryTiling
  block_k: int
  block_k_dkv: int
  flat_padded: int            # flat buffer padded so no tile load leaves it
  fwd_row_ptr: np.ndarray     # [num_query_blocks + 1]
  align: int                  # fwd_start is a multiple of this
  fwd_start: np.ndarray       # [num_fwd_tiles] flat offset of the tile
  fwd_used_lo: np.ndarray     # [num_fwd_tiles] first used entry of the tile
  fwd_used_hi: np.ndarray     # [num_fwd_tiles] one past the last used entry
  fwd_entries: np.ndarray     # [num_fwd_tiles, block_k] flat index of each entry
  fwd_lo: np.ndarray          # [num_fwd_tiles, block_k] entry windows, masked
  fwd_hi: np.ndarray          #   entries (past the valid length) have lo > hi
  dkv_row_ptr: np.ndarray     # [num_dkv_tiles + 1]
  dkv_query_block: np.ndarray  # [num_dkv_items] layout query block
  dkv_entry_lo: np.ndarray    # [num_dkv_items] first used entry inside the tile
  dkv_entry_hi: np.ndarray    # [num_dkv_items] one past the last used entry
  entry_lo: np.ndarray        # [flat_padded] first in-sequence token of the entry
  entry_hi: np.ndarray        # [flat_padded] last one (lo > hi: never attended)

  @property
  def num_dkv_tiles(self) -> int:
    return self.flat_padded // self.block_k_dkv


def _nonempty(array):
  # Pallas refs of size zero do not lower; a dummy entry is never read.
  return array if array.size else np.zeros(1, np.int32)


def _forward_tiles(layout, block_k, align):
  row_ptr, starts, used_lo, used_hi = [0], [], [], []
  for block in range(layout.num_query_blocks):
    for start, n in zip(layout.span_start[block], layout.span_len[block]):
      start, end = int(start), int(start) + int(n)
      for tile_start in range(start - start % align, end, block_k):
        starts.append(tile_start)
        used_lo.append(max(start - tile_start, 0))
        used_hi.append(min(end - tile_start, block_k))
    row_ptr.append(len(starts))
  return (np.asarray(row_ptr, np.int32),
          *(_nonempty(np.asarray(x, np.int32)) for x in (starts, used_lo, used_hi)))


def _transposed_tiles(layout, block_k, num_tiles):
  items = [[] for _ in range(num_tiles)]
  for block in range(layout.num_query_blocks):
    for start, n in zip(layout.span_start[block], layout.span_len[block]):
      start, end = int(start), int(start) + int(n)
      for tile in range(start // block_k, -(-end // block_k)):
        lo = max(start, tile * block_k) - tile * block_k
        hi = min(end, (tile + 1) * block_k) - tile * block_k
        previous = items[tile][-1] if items[tile] else None
        if previous and previous[0] == block and previous[2] == lo:
          items[tile][-1] = (block, previous[1], hi)  # adjacent spans: merge
        elif hi > lo:
          items[tile].append((block, lo, hi))
  row_ptr = np.cumsum([0] + [len(x) for x in items]).astype(np.int32)
  flat = [item for tile_items in items for item in tile_items]
  columns = np.asarray(flat, np.int32).reshape(-1, 3).T
  return row_ptr, columns[0], columns[1], columns[2]


def query_tiling(layout: TreeLayout, block_q: int, min_tile: int) -> QueryTiling:
  tile = max(min_tile, min(block_q, next_power_of_2(layout.query_block)))
  return QueryTiling(layout.query_block, tile, -(-layout.query_block // tile),
                     layout.num_query_blocks)


@functools.lru_cache(maxsize=64)
def tile_tables(layout: TreeLayout, block_q: int, block_k: int, block_k_dkv: int,
                min_tile: int, align: int = 1) -> TileTables:
  """The cached tables of `layout` for these tile sizes."""
  tiling = query_tiling(layout, block_q, min_tile)
  widest = max(block_k, block_k_dkv)
  # Whole dk/dv tiles, plus room for an unaligned forward tile at the very end.
  flat_padded = (-(-layout.flat_size // widest) + 1) * widest
  fwd_row_ptr, fwd_start, used_lo, used_hi = _forward_tiles(layout, block_k,
                                                            align)
  dkv = _transposed_tiles(layout, block_k_dkv, flat_padded // block_k_dkv)
  lo, hi = layout.entry_lo_hi
  entry_lo = np.ones(flat_padded, np.int32)
  entry_hi = np.zeros(flat_padded, np.int32)
  entry_lo[:lo.size], entry_hi[:hi.size] = lo, hi
  fwd_entries = fwd_start[:, None] + np.arange(block_k, dtype=np.int32)
  offsets = np.arange(block_k)[None, :]
  used = (offsets >= used_lo[:, None]) & (offsets < used_hi[:, None])
  fwd_lo = np.where(used, entry_lo[fwd_entries], 1).astype(np.int32)
  fwd_hi = np.where(used, entry_hi[fwd_entries], 0).astype(np.int32)
  return TileTables(tiling, block_k, block_k_dkv, flat_padded, fwd_row_ptr, align,
                    fwd_start, used_lo, used_hi, fwd_entries, fwd_lo, fwd_hi, dkv[0],
                    _nonempty(dkv[1]), _nonempty(dkv[2]), _nonempty(dkv[3]),
                    entry_lo, entry_hi)


@dataclasses.dataclass(frozen=True, eq=False)
class StepTables:
  """Grid steps of the TPU kernels (numpy int32, scalar-prefetched into SMEM).

  Forward / dq: one step per (kernel query tile, forward key tile) pair, the
  steps of one query tile consecutive so its output and accumulators stay in
  VMEM across them. dk / dv: one step per (dk/dv key tile, kernel query tile
  that uses it), consecutive per key tile. An output tile with nothing to
  attend still gets one step (tile / row -1) that only writes its empty result.
  """
  fwd_row: np.ndarray       # [fwd_steps] kernel query tile
  fwd_tile: np.ndarray      # [fwd_steps] forward key tile, -1: none
  fwd_start: np.ndarray     # [fwd_steps] flat offset of that tile (0 if none)
  dkv_tile: np.ndarray      # [dkv_steps] dk/dv key tile
  dkv_row: np.ndarray       # [dkv_steps] kernel query tile, -1: none
  dkv_entry_lo: np.ndarray  # [dkv_steps] entries of the key tile it uses
  dkv_entry_hi: np.ndarray


def run_chunks(owner: np.ndarray, max_steps: int):
  """`[(begin, end), ...]` cutting the steps only between output tiles' runs.

  Each chunk has at most `max_steps` steps unless one output tile alone has
  more; every run lies inside one chunk, so chunks write disjoint outputs.
  """
  run_ends = np.flatnonzero(np.diff(owner)) + 1
  chunks, begin, previous = [], 0, 0
  for end in list(run_ends) + [owner.size]:
    if end - begin > max_steps and previous > begin:
      chunks.append((int(begin), int(previous)))
      begin = previous
    previous = end
  chunks.append((int(begin), int(owner.size)))
  return chunks


def _expand(counts):
  """Per owner with `counts[i]` items: `(owner, index among its items, real)`.

  Owners without items get one step that is not real.
  """
  steps = np.maximum(counts, 1)
  owner = np.repeat(np.arange(counts.size), steps)
  first = np.cumsum(steps) - steps
  index = np.arange(owner.size) - first[owner]
  return owner, index, index < counts[owner]


@functools.lru_cache(maxsize=64)
def step_tables(tables: TileTables) -> StepTables:
  """The TPU kernels' grid steps over `tables` (cached per tables)."""
  tiling = tables.tiling
  row_ptr = tables.fwd_row_ptr
  row, index, real = _expand(np.diff(row_ptr)[
      np.arange(tiling.num_tiles) // tiling.sub_tiles])
  fwd_tile = np.where(real, row_ptr[row // tiling.sub_tiles] + index, -1)
  fwd_start = np.where(real, tables.fwd_start[np.maximum(fwd_tile, 0)], 0)

  # dk/dv: every item (query block using a key tile) is `sub_tiles` query tiles.
  items = int(tables.dkv_row_ptr[-1])
  sub = np.arange(tiling.sub_tiles)
  item_rows = (tables.dkv_query_block[:items, None] * tiling.sub_tiles + sub).ravel()
  repeat = lambda x: np.repeat(x[:items], tiling.sub_tiles)
  tile, _, dkv_real = _expand(np.diff(tables.dkv_row_ptr) * tiling.sub_tiles)
  dkv_row = np.full(tile.size, -1)
  entry_lo = np.zeros(tile.size, np.int32)
  entry_hi = np.zeros(tile.size, np.int32)
  dkv_row[dkv_real] = item_rows
  entry_lo[dkv_real] = repeat(tables.dkv_entry_lo)
  entry_hi[dkv_real] = repeat(tables.dkv_entry_hi)
  as_int = lambda *xs: [np.asarray(x, np.int32) for x in xs]
  return StepTables(*as_int(row, fwd_tile, fwd_start, tile, dkv_row, entry_lo,
                            entry_hi))


@functools.lru_cache(maxsize=16)
def bias_pieces(bucket_lookup: tuple, max_distance: int):
  """`((rel_lo, rel_hi, bucket), ...)` runs of equal bucket over relative positions.

  `bucket_lookup[r + max_distance]` is the bucket of relative position r in
  [-max_distance, max_distance]; positions beyond are clipped, so the first run
  extends to -inf and the last to +inf (None bounds).
  """
  pieces = []
  rel_lo = -max_distance
  for rel in range(-max_distance, max_distance + 1):
    last = rel == max_distance
    if last or bucket_lookup[rel + 1 + max_distance] != bucket_lookup[
        rel + max_distance]:
      pieces.append([rel_lo, rel, int(bucket_lookup[rel + max_distance])])
      rel_lo = rel + 1
  pieces[0][0] = None
  pieces[-1][1] = None
  return tuple(tuple(p) for p in pieces)

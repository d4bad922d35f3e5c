"""Host tile tables cover exactly the (query block, entry) pairs of each layout."""
import numpy as np
import pytest

from fovea_jax import attention
from fovea_jax.attention import dense
from fovea_jax.attention.pallas import tile_tables

LAYOUTS = {
    'fovea': lambda: attention.fovea_layout(75, block_len=8, wing=2),
    'fovea_causal_drop': lambda: attention.fovea_layout(
        61, block_len=4, edge='drop', causal=True, max_level=2),
    'fma': lambda: attention.fma_layout(70, fine_len=8, rank=2),
    'sliding': lambda: attention.local_layout(45, window=5),
    'block_causal': lambda: attention.local_layout(45, block_len=12, causal=True),
    'dense': lambda: dense.flash_layout(100, causal=False),
}


def layout_pairs(layout):
  return {(block, int(e))
          for block in range(layout.num_query_blocks)
          for start, n in zip(layout.span_start[block], layout.span_len[block])
          for e in range(start, start + n)}


@pytest.mark.parametrize('name', sorted(LAYOUTS))
@pytest.mark.parametrize('block_k,block_k_dkv,align', [(8, 16, 1), (32, 8, 1),
                                                       (16, 16, 16)])
def test_forward_and_transposed_tables_cover_the_layout(name, block_k, block_k_dkv,
                                                        align):
  layout = LAYOUTS[name]()
  t = tile_tables.tile_tables(layout, 16, block_k, block_k_dkv, 8, align)
  expected = layout_pairs(layout)

  # No wasted tiles: each span takes ceil(span / block_k) key tiles (aligned
  # starts: at most one more).
  minimal = sum(-(-int(n) // block_k) for n in layout.span_len.ravel())
  spans = np.count_nonzero(layout.span_len)
  assert minimal <= t.fwd_row_ptr[-1] <= minimal + (spans if align > 1 else 0)
  assert np.all(t.fwd_start % align == 0)
  forward = []
  for block in range(layout.num_query_blocks):
    for i in range(t.fwd_row_ptr[block], t.fwd_row_ptr[block + 1]):
      assert 0 <= t.fwd_used_lo[i] < t.fwd_used_hi[i] <= block_k
      assert t.fwd_start[i] + block_k <= t.flat_padded  # loads stay in the buffer
      forward += [(block, int(t.fwd_start[i]) + j)
                  for j in range(t.fwd_used_lo[i], t.fwd_used_hi[i])]
  assert len(forward) == len(set(forward)) and set(forward) == expected
  # Per-tile entry windows: the layout's on used entries, empty elsewhere.
  lo, hi = layout.entry_lo_hi
  offsets = np.arange(block_k)[None, :]
  used = ((offsets >= t.fwd_used_lo[:, None]) &
          (offsets < t.fwd_used_hi[:, None]))
  inside = np.minimum(t.fwd_entries, lo.size - 1)
  np.testing.assert_array_equal(t.fwd_lo[used], lo[inside][used])
  np.testing.assert_array_equal(t.fwd_hi[used], hi[inside][used])
  assert np.all(t.fwd_lo[~used] > t.fwd_hi[~used])

  transposed = []
  assert t.num_dkv_tiles * block_k_dkv == t.flat_padded
  for tile in range(t.num_dkv_tiles):
    for i in range(t.dkv_row_ptr[tile], t.dkv_row_ptr[tile + 1]):
      assert 0 <= t.dkv_entry_lo[i] < t.dkv_entry_hi[i] <= block_k_dkv
      transposed += [(int(t.dkv_query_block[i]), tile * block_k_dkv + j)
                     for j in range(t.dkv_entry_lo[i], t.dkv_entry_hi[i])]
  assert len(transposed) == len(set(transposed)) and set(transposed) == expected


def test_query_tiling_rounds_blocks_to_power_of_two_tiles():
  layout = dense.flash_layout(100, causal=False)  # one query block of 100
  tiling = tile_tables.tile_tables(layout, 32, 32, 32, 16).tiling
  assert (tiling.tile, tiling.sub_tiles, tiling.padded_length) == (32, 4, 128)
  small = attention.local_layout(45, block_len=12)
  tiling = tile_tables.tile_tables(small, 64, 32, 32, 16).tiling
  assert (tiling.tile, tiling.sub_tiles) == (16, 1)


def test_tables_are_cached_per_layout_and_sizes():
  layout = LAYOUTS['fovea']()
  assert (tile_tables.tile_tables(layout, 16, 8, 8, 8) is
          tile_tables.tile_tables(layout, 16, 8, 8, 8))
  assert (tile_tables.tile_tables(layout, 16, 8, 8, 8) is not
          tile_tables.tile_tables(layout, 16, 16, 8, 8))


@pytest.mark.parametrize('bidirectional', [True, False])
@pytest.mark.parametrize('num_buckets,max_distance', [(32, 128), (8, 16)])
def test_bias_pieces_reproduce_t5_buckets(bidirectional, num_buckets, max_distance):
  rel = np.arange(-3 * max_distance, 3 * max_distance + 1)
  want = attention.relative_position_bucket(
      rel, bidirectional=bidirectional, num_buckets=num_buckets,
      max_distance=max_distance)
  lookup = attention.RelativePositionBias(
      None, num_buckets, max_distance, bidirectional).bucket_lookup_table()
  pieces = tile_tables.bias_pieces(tuple(int(x) for x in lookup), max_distance)
  got = np.full(rel.shape, -1)
  for lo, hi, bucket in pieces:
    inside = ((rel >= lo) if lo is not None else True) & (
        (rel <= hi) if hi is not None else True)
    assert np.all(got[inside] == -1)  # pieces do not overlap
    got[inside] = bucket
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('name', sorted(LAYOUTS))
def test_tpu_steps_walk_every_tile_pair_once_in_output_runs(name):
  layout = LAYOUTS[name]()
  t = tile_tables.tile_tables(layout, 8, 16, 8, 8, 16)
  s = tile_tables.step_tables(t)
  tiling = t.tiling
  # Forward: every kernel query tile, in order, with its block's tiles.
  assert np.all(np.diff(s.fwd_row) >= 0)
  assert set(s.fwd_row) == set(range(tiling.num_tiles))
  expected = {(row, tile) for row in range(tiling.num_tiles)
              for tile in range(t.fwd_row_ptr[row // tiling.sub_tiles],
                                t.fwd_row_ptr[row // tiling.sub_tiles + 1])}
  real = s.fwd_tile >= 0
  assert len(expected) == real.sum()
  assert set(zip(s.fwd_row[real], s.fwd_tile[real])) == expected
  np.testing.assert_array_equal(s.fwd_start[real], t.fwd_start[s.fwd_tile[real]])
  # dk/dv: every key tile, in order, with (query tile, entries) of its items.
  assert np.all(np.diff(s.dkv_tile) >= 0)
  assert set(s.dkv_tile) == set(range(t.num_dkv_tiles))
  expected = {(tile, block * tiling.sub_tiles + sub, int(t.dkv_entry_lo[i]),
               int(t.dkv_entry_hi[i]))
              for tile in range(t.num_dkv_tiles)
              for i in range(t.dkv_row_ptr[tile], t.dkv_row_ptr[tile + 1])
              for block in [int(t.dkv_query_block[i])]
              for sub in range(tiling.sub_tiles)}
  real = s.dkv_row >= 0
  assert len(expected) == real.sum()
  assert set(zip(s.dkv_tile[real], s.dkv_row[real], s.dkv_entry_lo[real],
                 s.dkv_entry_hi[real])) == expected


@pytest.mark.parametrize('max_steps', [1, 3, 4, 100])
def test_run_chunks_cut_only_between_runs(max_steps):
  owner = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 3, 4])
  chunks = tile_tables.run_chunks(owner, max_steps)
  assert chunks[0][0] == 0 and chunks[-1][1] == owner.size
  for (_, end), (begin, _) in zip(chunks, chunks[1:]):
    assert end == begin and owner[begin - 1] != owner[begin]
  for begin, end in chunks:   # longer only when one run alone is longer
    assert end - begin <= max_steps or len(set(owner[begin:end])) == 1
  assert len(chunks) == {1: 5, 3: 4, 4: 4, 100: 1}[max_steps]

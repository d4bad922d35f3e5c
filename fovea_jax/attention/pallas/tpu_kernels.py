"""TPU (Mosaic) tree-attention kernels that stream every tile from HBM.

VMEM holds only the tiles of one grid step, so it does not grow with the
sequence: the last grid axis walks the `StepTables` (one (query tile, key tile)
pair per step, scalar-prefetched into SMEM) and every BlockSpec's index map reads
from them which tile to fetch, as jax's splash attention does with its block
masks. Steps of one output tile are consecutive, so the output block and the
float32 accumulators (VMEM scratch) stay put while they run; the pipeline
fetches the next step's tiles while the current one computes. SMEM does not
grow either: a long step list is cut, between output tiles, into calls of at
most `MAX_STEPS_PER_CALL` steps that write disjoint tiles of one output buffer
(aliased from call to call).

* forward / dq: grid (batch, head, step); K/V tiles start at any multiple of the
  16-entry alignment of the forward tables (element-offset windows,
  `pl.Element`), the per-tile entry rows (bias, windows) are read as 8-row blocks.
* dk / dv: grid (batch, kv head, step); the key tile is the output tile, q / dO /
  lse / delta tiles of the whole GQA group are streamed per step.

Inputs arrive in the layouts `tree_attention` builds for both backends; the
per-tile math is `tile_math`, shared with the GPU kernels.
"""
from __future__ import annotations

import jax
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
import jax.numpy as jnp

from fovea_jax.attention.pallas import tile_math
from fovea_jax.attention.pallas import tile_tables as tables_lib

# Rows of per-tile entry data (bias, windows) fetched per step: one sublane tile.
_ROWS = 8
# The default scoped VMEM limit is 16 MiB on v5e, 32 MiB on later chips.
_SMALL_VMEM = 16 << 20
# Steps per pallas_call: at most 4 int32 tables of this length (256 KiB) in SMEM,
# which has 1 MiB per core on v4 and later.
MAX_STEPS_PER_CALL = 16384


def _round_up(x, multiple):
  return -(-x // multiple) * multiple


def _tiled(rows, cols, itemsize):
  """Bytes of a `[rows, cols]` VMEM buffer in (8, 128) tiles."""
  return _round_up(rows, 8) * _round_up(cols, 128) * itemsize


def tpu_vmem_bytes(tables, groups, padded_head_dim, itemsize,
                   num_buckets_padded=1) -> int:
  """VMEM of the largest TPU call: double-buffered blocks plus scratch.

  Every term is one tile, so the total depends on tile sizes, head_dim and the
  GQA group, never on the sequence length.
  """
  tile, block_k, d = tables.tiling.tile, tables.block_k, padded_head_dim
  rows = _tiled(tile, d, itemsize)          # a q, dO, out or dq tile
  stats = _tiled(tile, 1, 4)                # lse, delta, row max, row total
  keys = _tiled(block_k, d, itemsize)       # a K or V tile
  entry_rows = 3 * _tiled(_ROWS, block_k, 4)
  d_table = _tiled(1, num_buckets_padded, 4)
  forward = (2 * (2 * rows + 2 * keys + entry_rows + stats) +
             _tiled(tile, d, 4) + 2 * stats)
  dq = (2 * (3 * rows + 2 * keys + entry_rows + 2 * stats + d_table) +
        _tiled(tile, d, 4) + d_table)
  key_tile = _tiled(tables.block_k_dkv, d, itemsize)
  grads = _tiled(tables.block_k_dkv, d, 4)
  dkv = (2 * (groups * (2 * rows + 2 * stats) + 2 * key_tile +
              3 * _tiled(1, tables.block_k_dkv, 4) + 2 * grads) + 2 * grads)
  return max(forward, dq, dkv)


def check_fits(tables, groups, padded_head_dim, itemsize, num_buckets_padded):
  """`vmem_limit_bytes` to compile with (None: the default); a clear error when
  the tiles of one step do not fit this TPU's VMEM."""
  capacity = pltpu.get_tpu_info().vmem_capacity_bytes
  needed = tpu_vmem_bytes(tables, groups, padded_head_dim, itemsize,
                          num_buckets_padded)
  if needed > 0.9 * capacity:
    raise ValueError(
        f'the TPU tree-attention kernels need {needed / 2**20:.0f} MiB of VMEM '
        f'per grid step, more than the {capacity / 2**20:.0f} MiB this TPU has: '
        f'use smaller BlockSizes.')
  if needed + (4 << 20) <= _SMALL_VMEM:
    return None
  return int(min(0.9 * capacity, needed + (8 << 20)))


# --------------------------------------------------------------------------------
# Step bookkeeping.


def _run_bounds(owner_ref, step, num_steps):
  """Whether `step` is the first / last of its output tile's consecutive run."""
  owner = owner_ref[step]
  first = (step == 0) | (owner_ref[jnp.maximum(step - 1, 0)] != owner)
  last = (step == num_steps - 1) | (
      owner_ref[jnp.minimum(step + 1, num_steps - 1)] != owner)
  return first, last


def _entry_rows(r, tile):
  """Entry bias, lo, hi rows `[1, block_k]` of forward key tile `tile`."""
  row = pl.ds(lax.rem(tile, _ROWS), 1)
  return r['entry_bias'][row, :], r['lo'][row, :], r['hi'][row, :]


def _segment_names(config):
  return ['q_seg', 'entry_seg'] if config.segmented else []


def _tile_segments(r, tile):
  """`(query ids [tile, 1], entry ids [1, block_k])` of this step, or None."""
  if 'q_seg' not in r:
    return None
  return r['q_seg'][...], r['entry_seg'][pl.ds(lax.rem(tile, _ROWS), 1), :]


# --------------------------------------------------------------------------------
# Kernels.


def _forward_kernel(rows_ref, tiles_ref, starts_ref, *refs, config, num_steps):
  del starts_ref  # read by the K/V index maps only
  has_bias = config.bias_pieces is not None
  r = dict(zip(['table'] * has_bias + [
      'q', 'k', 'v', 'entry_bias', 'lo', 'hi'] + _segment_names(config) + [
          'out', 'lse', 'acc', 'row_max', 'total'], refs))
  # program_id is read here, outside the pl.when bodies (the interpreter
  # substitutes it only at the kernel's top level).
  head, step = pl.program_id(1), pl.program_id(2)
  row, tile = rows_ref[step], tiles_ref[step]
  first, last = _run_bounds(rows_ref, step, num_steps)
  state_refs = (r['acc'], r['row_max'], r['total'])

  @pl.when(first)
  def _():
    for ref, value in zip(state_refs, tile_math.forward_init(config)):
      ref[...] = value

  @pl.when(tile >= 0)
  def _():
    position, query_ok = tile_math.query_positions(row, config)
    state = tile_math.forward_step(
        tuple(ref[...] for ref in state_refs), r['q'][...], r['k'][...],
        r['v'][...], *_entry_rows(r, tile), position, query_ok,
        head, r.get('table'), config, _tile_segments(r, tile))
    for ref, value in zip(state_refs, state):
      ref[...] = value

  @pl.when(last)
  def _():
    out, lse = tile_math.forward_result(tuple(ref[...] for ref in state_refs))
    r['out'][...] = out.astype(r['out'].dtype)
    r['lse'][...] = lse


def _dq_kernel(rows_ref, tiles_ref, starts_ref, *refs, config, num_steps):
  del starts_ref
  has_bias = config.bias_pieces is not None
  r = dict(zip(['table'] * has_bias + [
      'q', 'k', 'v', 'entry_bias', 'lo', 'hi', 'd_out', 'lse', 'delta'] +
               _segment_names(config) + ['dq'] + ['d_table'] * has_bias +
               ['dq_acc', 'd_table_acc'], refs))
  # program_id is read here, outside the pl.when bodies (the interpreter
  # substitutes it only at the kernel's top level).
  head, step = pl.program_id(1), pl.program_id(2)
  row, tile = rows_ref[step], tiles_ref[step]
  first, last = _run_bounds(rows_ref, step, num_steps)
  state_refs = (r['dq_acc'], r['d_table_acc'])

  @pl.when(first)
  def _():
    for ref in state_refs:
      ref[...] = jnp.zeros(ref.shape, jnp.float32)

  @pl.when(tile >= 0)
  def _():
    position, query_ok = tile_math.query_positions(row, config)
    state = tile_math.dq_step(
        tuple(ref[...] for ref in state_refs), r['q'][...], r['k'][...],
        r['v'][...], *_entry_rows(r, tile), r['d_out'][...], r['lse'][...],
        r['delta'][...], position, query_ok, head, r.get('table'),
        config, _tile_segments(r, tile))
    for ref, value in zip(state_refs, state):
      ref[...] = value

  @pl.when(last)
  def _():
    r['dq'][...] = (r['dq_acc'][...] * config.scale).astype(r['dq'].dtype)
    if has_bias:
      r['d_table'][...] = r['d_table_acc'][...]


def _dkv_kernel(tiles_ref, rows_ref, entry_lo_ref, entry_hi_ref, *refs, config,
                num_steps):
  has_bias = config.bias_pieces is not None
  r = dict(zip(['table'] * has_bias + [
      'q', 'k', 'v', 'entry_bias', 'lo', 'hi', 'd_out', 'lse', 'delta'] +
               _segment_names(config) + ['dk', 'dv', 'dk_acc', 'dv_acc'], refs))
  kv_head, step = pl.program_id(1), pl.program_id(2)
  row = rows_ref[step]
  first, last = _run_bounds(tiles_ref, step, num_steps)
  state_refs = (r['dk_acc'], r['dv_acc'])

  @pl.when(first)
  def _():
    for ref in state_refs:
      ref[...] = jnp.zeros(ref.shape, jnp.float32)

  @pl.when(row >= 0)
  def _():
    k = r['k'][...]
    entry_index = lax.broadcasted_iota(jnp.int32, (1, k.shape[0]), 1)
    entry_ok = ((entry_index >= entry_lo_ref[step]) &
                (entry_index < entry_hi_ref[step]))
    position, query_ok = tile_math.query_positions(row, config)
    state = tuple(ref[...] for ref in state_refs)
    for group in range(config.groups):
      segments = (None if not config.segmented else
                  (r['q_seg'][group], r['entry_seg'][...]))
      state = tile_math.dkv_step(
          state, r['q'][group], r['d_out'][group], r['lse'][group],
          r['delta'][group], k, r['v'][...], r['entry_bias'][...], r['lo'][...],
          r['hi'][...], entry_ok, position, query_ok,
          kv_head * config.groups + group, r.get('table'), config, segments)
    for ref, value in zip(state_refs, state):
      ref[...] = value

  @pl.when(last)
  def _():
    r['dk'][...] = (r['dk_acc'][...] * config.scale).astype(r['dk'].dtype)
    r['dv'][...] = r['dv_acc'][...].astype(r['dv'].dtype)


# --------------------------------------------------------------------------------
# pallas_calls.


def _call(kernel, config, *, prefetch, owner, grid, in_specs, inputs, out_specs,
          out_shape, scratch, table, name):
  """The kernel over all steps, in chunks of at most `MAX_STEPS_PER_CALL`.

  prefetch: per-step int32 tables; owner: the one whose runs are output tiles.
  grid: the leading grid axes (the step axis is appended per chunk).
  """
  if table is not None:
    in_specs = [pl.BlockSpec(table.shape, lambda *_: (0, 0),
                             memory_space=pltpu.SMEM)] + in_specs
    inputs = [table] + inputs
  num_in = len(prefetch) + len(inputs)
  # Steps of one output tile accumulate in order: the step axis is sequential.
  params = pltpu.CompilerParams(
      dimension_semantics=('parallel', 'parallel', 'arbitrary'),
      vmem_limit_bytes=config.vmem_limit_bytes)
  outputs = None
  for begin, end in tables_lib.run_chunks(owner, MAX_STEPS_PER_CALL):
    previous = [] if outputs is None else list(outputs)

    def body(*refs, num_steps=end - begin, skip=len(previous)):
      # The previous chunk's outputs are aliased inputs the kernel never reads.
      kernel(*refs[:num_in], *refs[num_in + skip:], config=config,
             num_steps=num_steps)

    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=len(prefetch), grid=grid + (end - begin,),
        in_specs=in_specs + [pl.BlockSpec(memory_space=pl.ANY)] * len(previous),
        out_specs=out_specs,
        scratch_shapes=[pltpu.VMEM(shape, jnp.float32) for shape in scratch])
    outputs = pl.pallas_call(
        body, grid_spec=grid_spec, out_shape=out_shape, compiler_params=params,
        interpret=config.interpret, name=name,
        input_output_aliases={num_in + i: i for i in range(len(previous))})(
            *[jnp.asarray(x[begin:end]) for x in prefetch], *inputs, *previous)
  return outputs


def _query_side_specs(config):
  """q-row, K/V (element offset) and entry-row specs of the forward / dq calls."""
  t, d, groups = config.tables, config.padded_head_dim, config.groups
  q = pl.BlockSpec((None, None, t.tiling.tile, d),
                   lambda b, h, s, rows, tiles, starts: (b, h, rows[s], 0))
  kv = pl.BlockSpec((None, None, pl.Element(t.block_k), pl.Element(d)),
                    lambda b, h, s, rows, tiles, starts: (b, h // groups,
                                                          starts[s], 0))
  tile_block = lambda s, tiles: jnp.maximum(tiles[s], 0) // _ROWS
  entry_bias = pl.BlockSpec((None, _ROWS, t.block_k),
                            lambda b, h, s, rows, tiles, starts:
                            (b, tile_block(s, tiles), 0))
  window = pl.BlockSpec((_ROWS, t.block_k), lambda b, h, s, rows, tiles, starts:
                        (tile_block(s, tiles), 0))
  stats = pl.BlockSpec((None, None, t.tiling.tile, 1),
                       lambda b, h, s, rows, tiles, starts: (b, h, rows[s], 0))
  return q, [kv, kv, entry_bias, window, window], stats


def _pad_tile_rows(x, axis):
  """Pads the per-forward-tile axis to whole `_ROWS`-row blocks."""
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, _round_up(x.shape[axis], _ROWS) - x.shape[axis])
  return jnp.pad(x, pad)


def _tile_inputs(tile_inputs):
  k_t, v_t, tile_bias, lo, hi = tile_inputs
  return [k_t, v_t, _pad_tile_rows(tile_bias, 1), _pad_tile_rows(lo, 0),
          _pad_tile_rows(hi, 0)]


def _segment_inputs(config, tile_segments, stats, entry_spec):
  """`(specs, inputs)` of the query ids (as a statistic) and the per-tile
  entry ids (as the tile bias), or empty lists unpacked."""
  if not tile_segments:
    return [], []
  q_ids, tile_ids = tile_segments
  return [stats, entry_spec], [q_ids, _pad_tile_rows(tile_ids, 1)]


def forward(config, q_t, tile_inputs, table, tile_segments=()):
  """`(out, lse)` in query-major layout; `tile_inputs` are K, V, tile bias, lo,
  hi; `tile_segments` the query ids and per-tile entry ids, if packed."""
  steps = tables_lib.step_tables(config.tables)
  b, heads = q_t.shape[:2]
  q_spec, key_specs, stats = _query_side_specs(config)
  seg_specs, seg_inputs = _segment_inputs(config, tile_segments, stats,
                                          key_specs[2])
  tile = config.tables.tiling.tile
  return _call(
      _forward_kernel, config,
      prefetch=(steps.fwd_row, steps.fwd_tile, steps.fwd_start),
      owner=steps.fwd_row, grid=(b, heads),
      in_specs=[q_spec] + key_specs + seg_specs,
      inputs=[q_t] + _tile_inputs(tile_inputs) + seg_inputs,
      out_specs=[q_spec, stats],
      out_shape=[jax.ShapeDtypeStruct(q_t.shape, tile_inputs[1].dtype),
                 jax.ShapeDtypeStruct(q_t.shape[:3] + (1,), jnp.float32)],
      scratch=[(tile, config.padded_head_dim), (tile, 1), (tile, 1)],
      table=table, name='tree_attention_forward')


def dq(config, q_t, tile_inputs, do_t, lse, delta, table, tile_segments=()):
  """dq in query-major layout and, with a bias table, per-tile table gradients."""
  steps = tables_lib.step_tables(config.tables)
  b, heads = q_t.shape[:2]
  q_spec, key_specs, stats = _query_side_specs(config)
  seg_specs, seg_inputs = _segment_inputs(config, tile_segments, stats,
                                          key_specs[2])
  nbp = config.num_buckets_padded
  out_specs = [q_spec]
  out_shape = [jax.ShapeDtypeStruct(q_t.shape, q_t.dtype)]
  if table is not None:
    out_specs.append(pl.BlockSpec(
        (None, None, None, 1, nbp),
        lambda b, h, s, rows, tiles, starts: (b, h, rows[s], 0, 0)))
    out_shape.append(jax.ShapeDtypeStruct(
        (b, heads, config.tables.tiling.num_tiles, 1, nbp), jnp.float32))
  return _call(
      _dq_kernel, config,
      prefetch=(steps.fwd_row, steps.fwd_tile, steps.fwd_start),
      owner=steps.fwd_row, grid=(b, heads),
      in_specs=[q_spec] + key_specs + [q_spec, stats, stats] + seg_specs,
      inputs=[q_t] + _tile_inputs(tile_inputs) + [do_t, lse, delta] +
      seg_inputs,
      out_specs=out_specs, out_shape=out_shape,
      scratch=[(config.tables.tiling.tile, config.padded_head_dim), (1, nbp)],
      table=table, name='tree_attention_dq')


def dkv(config, q_t, k_t, v_t, entry_rows, do_t, lse, delta, table,
        segments=None):
  """dk, dv `[b, kv_heads, flat_padded, d]` float32 (flat-major layout);
  segments: query ids `[b, heads, padded_length, 1]` and entry ids `[b, 1,
  flat_padded]`, if packed."""
  steps = tables_lib.step_tables(config.tables)
  t, d, groups = config.tables, config.padded_head_dim, config.groups
  bk, tile = t.block_k_dkv, t.tiling.tile
  row = lambda s, rows: jnp.maximum(rows[s], 0)
  group_rows = pl.BlockSpec((None, groups, tile, d),
                            lambda b, h, s, tiles, rows, lo, hi:
                            (b, h, row(s, rows), 0))
  group_stats = pl.BlockSpec((None, groups, tile, 1),
                             lambda b, h, s, tiles, rows, lo, hi:
                             (b, h, row(s, rows), 0))
  key_tile = pl.BlockSpec((None, None, bk, d),
                          lambda b, h, s, tiles, rows, lo, hi: (b, h, tiles[s], 0))
  entry_bias = pl.BlockSpec((None, 1, bk), lambda b, h, s, tiles, rows, lo, hi:
                            (b, 0, tiles[s]))
  window = pl.BlockSpec((1, bk), lambda b, h, s, tiles, rows, lo, hi:
                        (0, tiles[s]))
  return _call(
      _dkv_kernel, config,
      prefetch=(steps.dkv_tile, steps.dkv_row, steps.dkv_entry_lo,
                steps.dkv_entry_hi),
      owner=steps.dkv_tile, grid=(q_t.shape[0], k_t.shape[1]),
      in_specs=[group_rows, key_tile, key_tile, entry_bias, window, window,
                group_rows, group_stats, group_stats] +
      ([group_stats, entry_bias] if segments else []),
      inputs=[q_t, k_t, v_t, *entry_rows, do_t, lse, delta] +
      list(segments or ()),
      out_specs=[key_tile, key_tile],
      out_shape=[jax.ShapeDtypeStruct(k_t.shape, jnp.float32)] * 2,
      scratch=[(bk, d), (bk, d)], table=table, name='tree_attention_dkv')

"""Tree-level block attention as Pallas kernels: forward, dq and dk/dv.

The fast path of fovea, FMA, local and (flash) dense attention on GPU and TPU, and
the same kernels in interpret mode on CPU. Semantics are those of
`tree_attention_xla` (the engine contract): query block `i` of a `TreeLayout`
attends to its spans of the flat K/V buffer built by `pyramid.build_flat_kv`;
causal (`hi <= query_pos`), sliding-window and T5 relative-position terms are
computed inside the kernels from the token window `[lo, hi]` of each flat entry.

* forward: per (batch, head, query tile), an online softmax over the tile's key
  tiles (`tile_tables`), saving the log-sum-exp.
* dq: the same (query tile, key tile) pairs again; also the position-bias table
  gradient.
* dk/dv: per (batch, kv head, aligned key tile), the transposed table (the query
  blocks that use the tile); GQA groups are summed inside, so every output tile
  has one owner and nothing is scattered.

Two lowerings share the per-tile math (`tile_math`): on GPU (and in interpret
mode) one Triton program per output tile loops over its input tiles, defined
here; on TPU (Mosaic) a grid step per (output tile, input tile) pair streams the
tiles through VMEM (`tpu_kernels`), so no length is too long for VMEM. The
readable math is `tree_level_attention_reference` at the bottom of this file.
"""
from __future__ import annotations

import functools

import jax
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton
import jax.numpy as jnp
import numpy as np

from fovea_jax.attention import common
from fovea_jax.attention.layout import TreeLayout
from fovea_jax.attention.layout import relative_position_to_window
from fovea_jax.attention.layout import static_entry_mask
from fovea_jax.attention.pallas import sharding
from fovea_jax.attention.pallas import tile_math
from fovea_jax.attention.pallas import tile_tables as tables_lib
from fovea_jax.attention.pallas import tpu_kernels
from fovea_jax.attention.pallas.tile_math import BlockSizes

BACKENDS = ('gpu', 'tpu')
# Smallest query tile per backend: Triton's dot needs 16 rows, TPU 8 sublanes.
_MIN_QUERY_TILE = {'gpu': 16, 'tpu': 8}


# --------------------------------------------------------------------------------
# GPU (Triton) kernels: one program per output tile loops over its input tiles;
# the whole flat K/V (or group's q/dO) is addressed in HBM. The TPU kernels, which
# stream tiles through VMEM instead, are `tpu_kernels`.


def _split_refs(refs, names):
  return dict(zip(names, refs))


def _forward_tile(r, t, tables):
  """K, V `[tk, d]` and entry bias, lo, hi `[1, tk]` of forward key tile `t`."""
  entries = pl.ds(r['start'][t], tables.block_k)
  row = pl.ds(t, 1)
  return (r['k'][entries, :], r['v'][entries, :], r['entry_bias'][row, :],
          r['lo'][row, :], r['hi'][row, :])


_SEGMENT_REFS = ('q_seg', 'entry_seg')


def _segment_refs(config):
  return list(_SEGMENT_REFS) if config.segmented else []


def _tile_segments(r, t):
  """`(query ids [tq, 1], entry ids [1, tk] of forward key tile t)` or None."""
  if 'q_seg' not in r:
    return None
  return r['q_seg'][...], r['entry_seg'][pl.ds(t, 1), :]


def _forward_kernel(*refs, config: tile_math.KernelConfig):
  has_bias = config.bias_pieces is not None
  names = ['row_ptr', 'start'] + ['table'] * has_bias + [
      'q', 'k', 'v', 'entry_bias', 'lo', 'hi'] + _segment_refs(config) + [
          'out', 'lse']
  r = _split_refs(refs, names)
  head, row = pl.program_id(1), pl.program_id(2)
  block = lax.div(row, config.tables.tiling.sub_tiles)
  position, query_ok = tile_math.query_positions(row, config)
  q = r['q'][...]

  def body(t, state):
    return tile_math.forward_step(state, q, *_forward_tile(r, t, config.tables),
                                  position, query_ok, head, r.get('table'), config,
                                  _tile_segments(r, t))

  state = lax.fori_loop(r['row_ptr'][block], r['row_ptr'][block + 1], body,
                        tile_math.forward_init(config))
  out, lse = tile_math.forward_result(state)
  r['out'][...] = out.astype(r['out'].dtype)
  r['lse'][...] = lse


def _dq_kernel(*refs, config: tile_math.KernelConfig):
  has_bias = config.bias_pieces is not None
  names = (['row_ptr', 'start'] + ['table'] * has_bias +
           ['q', 'k', 'v', 'entry_bias', 'lo', 'hi', 'd_out', 'lse', 'delta'] +
           _segment_refs(config) + ['dq'] + ['d_table'] * has_bias)
  r = _split_refs(refs, names)
  head, row = pl.program_id(1), pl.program_id(2)
  block = lax.div(row, config.tables.tiling.sub_tiles)
  position, query_ok = tile_math.query_positions(row, config)
  q, d_out = r['q'][...], r['d_out'][...]
  lse, delta = r['lse'][...], r['delta'][...]

  def body(t, state):
    k, v, entry_bias, lo, hi = _forward_tile(r, t, config.tables)
    return tile_math.dq_step(state, q, k, v, entry_bias, lo, hi, d_out, lse, delta,
                             position, query_ok, head, r.get('table'), config,
                             _tile_segments(r, t))

  init = (jnp.zeros(q.shape, jnp.float32),
          jnp.zeros((1, config.num_buckets_padded), jnp.float32))
  dq, d_table = lax.fori_loop(r['row_ptr'][block], r['row_ptr'][block + 1], body,
                              init)
  r['dq'][...] = (dq * config.scale).astype(r['dq'].dtype)
  if has_bias:
    r['d_table'][...] = d_table


def _dkv_kernel(*refs, config: tile_math.KernelConfig):
  has_bias = config.bias_pieces is not None
  names = (['row_ptr', 'query_block', 'entry_lo', 'entry_hi'] +
           ['table'] * has_bias +
           ['q', 'k', 'v', 'entry_bias', 'lo', 'hi', 'd_out', 'lse', 'delta'] +
           _segment_refs(config) + ['dk', 'dv'])
  r = _split_refs(refs, names)
  entry_seg = r['entry_seg'][...] if config.segmented else None
  kv_head, key_tile = pl.program_id(1), pl.program_id(2)
  k, v = r['k'][...], r['v'][...]
  entry_bias, lo, hi = r['entry_bias'][...], r['lo'][...], r['hi'][...]
  tiling = config.tables.tiling
  entry_index = lax.broadcasted_iota(jnp.int32, (1, k.shape[0]), 1)

  def body(t, state):
    entry_ok = (entry_index >= r['entry_lo'][t]) & (entry_index < r['entry_hi'][t])
    first_row = r['query_block'][t] * tiling.sub_tiles
    for sub in range(tiling.sub_tiles):
      row = first_row + sub
      position, query_ok = tile_math.query_positions(row, config)
      rows = pl.ds(pl.multiple_of(row * tiling.tile, tiling.tile), tiling.tile)
      for group in range(config.groups):
        segments = (None if entry_seg is None else
                    (r['q_seg'][group, rows, :], entry_seg))
        state = tile_math.dkv_step(
            state, r['q'][group, rows, :], r['d_out'][group, rows, :],
            r['lse'][group, rows, :], r['delta'][group, rows, :], k, v,
            entry_bias, lo, hi, entry_ok, position, query_ok,
            kv_head * config.groups + group, r.get('table'), config, segments)
    return state

  init = (jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
  dk, dv = lax.fori_loop(r['row_ptr'][key_tile], r['row_ptr'][key_tile + 1], body,
                         init)
  r['dk'][...] = (dk * config.scale).astype(r['dk'].dtype)
  r['dv'][...] = dv.astype(r['dv'].dtype)


def _gpu_call(kernel, config, *, grid, index_tables, in_specs, inputs, out_specs,
              out_shape, table, name):
  """Runs `kernel(*index_tables, [table], *inputs, *outputs)` under Triton."""
  kernel = functools.partial(kernel, config=config)
  index_tables = [jnp.asarray(x) for x in index_tables]
  if table is not None:
    in_specs = [pl.BlockSpec(table.shape, lambda *_: (0, 0))] + in_specs
    inputs = [table] + inputs
  table_specs = [pl.BlockSpec(x.shape, lambda *_: (0,)) for x in index_tables]
  params = None
  if not config.interpret:
    head_dim = config.padded_head_dim
    num_warps = config.block_sizes.num_warps or (4 if head_dim <= 64 else 8)
    params = pltriton.CompilerParams(num_warps=num_warps,
                                     num_stages=config.block_sizes.num_stages)
  return pl.pallas_call(kernel, grid=grid, in_specs=table_specs + in_specs,
                        out_specs=out_specs, out_shape=out_shape,
                        compiler_params=params, interpret=config.interpret,
                        name=name)(*index_tables, *inputs)


# --------------------------------------------------------------------------------
# Layouts shared by both backends, the calls, and the custom VJP.


def _query_major(x, config, width=None):
  """`[b, n, heads, d]` -> `[b, heads, num_tiles * tile, width]` in tile order.

  width: the padded head_dim by default; 1 for per-query statistics.
  """
  tiling = config.tables.tiling
  b, n, heads, d = x.shape
  width = width or config.padded_head_dim
  x = common.pad_length(x, tiling.num_query_blocks * tiling.query_block)
  x = x.reshape(b, tiling.num_query_blocks, tiling.query_block, heads, d)
  x = jnp.pad(x, ((0, 0), (0, 0),
                  (0, tiling.sub_tiles * tiling.tile - tiling.query_block),
                  (0, 0), (0, width - d)))
  x = x.reshape(b, tiling.padded_length, heads, width)
  return jnp.swapaxes(x, 1, 2)


def _from_query_major(x, length, config):
  """Inverse of `_query_major` (drops padded rows and head_dim padding)."""
  tiling = config.tables.tiling
  b, heads = x.shape[:2]
  x = jnp.swapaxes(x, 1, 2).reshape(b, tiling.num_query_blocks,
                                    tiling.sub_tiles * tiling.tile, heads, -1)
  x = x[:, :, :tiling.query_block].reshape(b, -1, heads, x.shape[-1])
  return x[:, :length, :, :config.head_dim]


def _flat_major(x, config):
  """`[b, flat, kv_heads, d]` -> `[b, kv_heads, flat_padded, d_pad]`."""
  extra = config.tables.flat_padded - x.shape[1]
  x = jnp.pad(x, ((0, 0), (0, extra), (0, 0),
                  (0, config.padded_head_dim - x.shape[3])))
  return jnp.swapaxes(x, 1, 2)


def _entry_rows(entry_bias, config):
  """Entry bias `[b, 1, flat_padded]` and windows lo, hi `[1, flat_padded]`.

  Entry-side values are kept as rows so that they broadcast against `[tq, tk]`
  scores without reshapes (and meet TPU's 2-D block rules).
  """
  extra = config.tables.flat_padded - entry_bias.shape[1]
  entry_bias = jnp.pad(entry_bias.astype(jnp.float32), ((0, 0), (0, extra)),
                       constant_values=common.MASKED)[:, None, :]
  return (entry_bias, jnp.asarray(config.tables.entry_lo)[None],
          jnp.asarray(config.tables.entry_hi)[None])


def _segment_inputs(segment_ids, heads, config):
  """`(query ids [b, heads, padded_length, 1], entry ids [b, 1, flat_padded])`
  float32 (padding: query 0, entries -1), or None unpacked."""
  if segment_ids is None:
    return None
  q_ids, entry_ids = segment_ids
  q_ids = jnp.broadcast_to(q_ids.astype(jnp.float32)[:, :, None, None],
                           q_ids.shape + (heads, 1))
  extra = config.tables.flat_padded - entry_ids.shape[1]
  entry_rows = jnp.pad(entry_ids.astype(jnp.float32), ((0, 0), (0, extra)),
                       constant_values=-1.0)[:, None, :]
  return _query_major(q_ids, config, width=1), entry_rows


def _forward_tile_segments(segments, config):
  """Query ids and the entry ids gathered per forward tile (as the bias)."""
  if segments is None:
    return []
  q_ids, entry_rows = segments
  t = config.tables
  return [q_ids, jnp.take(entry_rows[:, 0], jnp.asarray(t.fwd_entries), axis=1)]


def _bias_table(table, config):
  """`[num_buckets, heads]` -> `[heads, num_buckets_padded]` float32, or None."""
  if table is None:
    return None
  table = table.astype(jnp.float32).T
  return jnp.pad(table, ((0, 0), (0, config.num_buckets_padded - table.shape[1])))


def _row_spec(config, width):
  """Spec of a `[b, heads, padded_length, width]` array, one query tile."""
  return pl.BlockSpec((None, None, config.tables.tiling.tile, width),
                      lambda b, h, i, *_: (b, h, i, 0))


def _key_side_specs(config):
  """Whole flat K/V (of the head's kv group) and per-forward-tile entry rows."""
  t = config.tables
  flat, d, groups = t.flat_padded, config.padded_head_dim, config.groups
  tiles = t.fwd_entries.shape
  kv = pl.BlockSpec((None, None, flat, d),
                    lambda b, h, i, *_: (b, h // groups, 0, 0))
  window = pl.BlockSpec(tiles, lambda *_: (0, 0))
  return [kv, kv, pl.BlockSpec((None,) + tiles, lambda b, h, i, *_: (b, 0, 0)),
          window, window]


def _forward_tile_inputs(k_t, v_t, entry_bias_rows, config):
  """Inputs matching `_key_side_specs`: entry bias gathered per forward tile."""
  t = config.tables
  tile_bias = jnp.take(entry_bias_rows[:, 0], jnp.asarray(t.fwd_entries), axis=1)
  return [k_t, v_t, tile_bias, jnp.asarray(t.fwd_lo), jnp.asarray(t.fwd_hi)]


def _segment_specs(config):
  """Specs of `_forward_tile_segments`: query ids per tile, entry ids per
  forward tile (as the tile bias)."""
  if not config.segmented:
    return []
  tiles = config.tables.fwd_entries.shape
  return [_row_spec(config, 1),
          pl.BlockSpec((None,) + tiles, lambda b, h, i, *_: (b, 0, 0))]


def _forward(q, k_flat, v_flat, entry_bias, table, segments, config):
  t = config.tables
  b, heads = q.shape[0], q.shape[2]
  q_t = _query_major(q, config)
  tile_inputs = _forward_tile_inputs(
      _flat_major(k_flat, config), _flat_major(v_flat, config),
      _entry_rows(entry_bias, config)[0], config)
  tile_segments = _forward_tile_segments(segments, config)
  table = _bias_table(table, config)
  if config.backend == 'tpu':
    out, lse = tpu_kernels.forward(config, q_t, tile_inputs, table,
                                   tile_segments)
    return _from_query_major(out, q.shape[1], config), lse
  d = config.padded_head_dim
  out, lse = _gpu_call(
      _forward_kernel, config, grid=(b, heads, t.tiling.num_tiles),
      index_tables=(t.fwd_row_ptr, t.fwd_start),
      in_specs=([_row_spec(config, d)] + _key_side_specs(config) +
                _segment_specs(config)),
      inputs=[q_t] + tile_inputs + tile_segments,
      out_specs=[_row_spec(config, d), _row_spec(config, 1)],
      out_shape=[jax.ShapeDtypeStruct(q_t.shape, v_flat.dtype),
                 jax.ShapeDtypeStruct(q_t.shape[:3] + (1,), jnp.float32)],
      table=table, name='tree_attention_forward')
  return _from_query_major(out, q.shape[1], config), lse


def _gpu_dq(config, q_t, tile_inputs, do_t, lse, delta, table, tile_segments):
  t = config.tables
  b, heads = q_t.shape[:2]
  d, nbp = config.padded_head_dim, config.num_buckets_padded
  out_specs = [_row_spec(config, d)]
  out_shape = [jax.ShapeDtypeStruct(q_t.shape, q_t.dtype)]
  if table is not None:  # per-program partial sums of the table gradient
    out_specs.append(pl.BlockSpec((None, None, None, 1, nbp),
                                  lambda b, h, i, *_: (b, h, i, 0, 0)))
    out_shape.append(jax.ShapeDtypeStruct(
        (b, heads, t.tiling.num_tiles, 1, nbp), jnp.float32))
  return _gpu_call(
      _dq_kernel, config, grid=(b, heads, t.tiling.num_tiles),
      index_tables=(t.fwd_row_ptr, t.fwd_start),
      in_specs=[_row_spec(config, d)] + _key_side_specs(config) + [
          _row_spec(config, d), _row_spec(config, 1), _row_spec(config, 1)] +
      _segment_specs(config),
      inputs=[q_t] + tile_inputs + [do_t, lse, delta] + tile_segments,
      out_specs=out_specs, out_shape=out_shape, table=table,
      name='tree_attention_dq')


def _gpu_dkv(config, q_t, k_t, v_t, entry_rows, do_t, lse, delta, table,
             segments):
  t, d = config.tables, config.padded_head_dim
  groups, bk = config.groups, t.block_k_dkv
  whole_rows = pl.BlockSpec((None, groups, t.tiling.padded_length, d),
                            lambda b, h, j, *_: (b, h, 0, 0))
  whole_row_stats = pl.BlockSpec((None, groups, t.tiling.padded_length, 1),
                                 lambda b, h, j, *_: (b, h, 0, 0))
  key_tile = pl.BlockSpec((None, None, bk, d), lambda b, h, j, *_: (b, h, j, 0))
  entry_tile = pl.BlockSpec((1, bk), lambda b, h, j, *_: (0, j))
  entry_row_tile = pl.BlockSpec((None, 1, bk), lambda b, h, j, *_: (b, 0, j))
  segment_specs = [whole_row_stats, entry_row_tile] if segments else []
  return _gpu_call(
      _dkv_kernel, config, grid=(q_t.shape[0], k_t.shape[1], t.num_dkv_tiles),
      index_tables=(t.dkv_row_ptr, t.dkv_query_block, t.dkv_entry_lo,
                    t.dkv_entry_hi),
      in_specs=[whole_rows, key_tile, key_tile, entry_row_tile,
                entry_tile, entry_tile, whole_rows, whole_row_stats,
                whole_row_stats] + segment_specs,
      inputs=[q_t, k_t, v_t, *entry_rows, do_t, lse, delta] +
      list(segments or ()),
      out_specs=[key_tile, key_tile],
      out_shape=[jax.ShapeDtypeStruct(k_t.shape, jnp.float32)] * 2,
      table=table, name='tree_attention_dkv')


def _backward(q, k_flat, v_flat, entry_bias, table, segments, out, lse, d_out,
              config):
  q_t = _query_major(q, config)
  do_t = _query_major(d_out.astype(q.dtype), config)
  # delta_i = sum_d dO_i * O_i: the softmax-Jacobian term shared by all keys.
  delta = _query_major(jnp.sum(d_out.astype(jnp.float32) *
                               out.astype(jnp.float32), axis=-1, keepdims=True),
                       config, width=1)
  k_t, v_t = _flat_major(k_flat, config), _flat_major(v_flat, config)
  entry_rows = _entry_rows(entry_bias, config)
  tile_inputs = _forward_tile_inputs(k_t, v_t, entry_rows[0], config)
  bias_table = _bias_table(table, config)
  kernels = (tpu_kernels.dq, tpu_kernels.dkv) if config.backend == 'tpu' else (
      _gpu_dq, _gpu_dkv)
  dq_outputs = kernels[0](config, q_t, tile_inputs, do_t, lse, delta, bias_table,
                          _forward_tile_segments(segments, config))
  dq = _from_query_major(dq_outputs[0], q.shape[1], config)
  d_table = None
  if bias_table is not None:
    d_table = dq_outputs[1].sum(axis=(0, 2, 3))[:, :table.shape[0]].T
    d_table = d_table.astype(table.dtype)
  dk, dv = kernels[1](config, q_t, k_t, v_t, entry_rows, do_t, lse, delta,
                      bias_table, segments)
  flat = k_flat.shape[1]
  dk = jnp.swapaxes(dk, 1, 2)[:, :flat, :, :config.head_dim].astype(k_flat.dtype)
  dv = jnp.swapaxes(dv, 1, 2)[:, :flat, :, :config.head_dim].astype(v_flat.dtype)
  return dq, dk, dv, d_table


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _tree_attention(q, k_flat, v_flat, entry_bias, table, segments, config):
  return _forward(q, k_flat, v_flat, entry_bias, table, segments, config)[0]


def _tree_attention_fwd(q, k_flat, v_flat, entry_bias, table, segments, config):
  out, lse = _forward(q, k_flat, v_flat, entry_bias, table, segments, config)
  return out, (q, k_flat, v_flat, entry_bias, table, segments, out, lse)


def _tree_attention_bwd(config, residuals, d_out):
  q, k_flat, v_flat, entry_bias, table, segments, out, lse = residuals
  dq, dk, dv, d_table = _backward(q, k_flat, v_flat, entry_bias, table, segments,
                                  out, lse, d_out, config)
  # entry_bias depends only on masks and counts: it carries no gradient; nor
  # do the segment ids.
  return dq, dk, dv, jnp.zeros_like(entry_bias), d_table, None


_tree_attention.defvjp(_tree_attention_fwd, _tree_attention_bwd)


@functools.lru_cache(maxsize=256)
def _config(layout, scale, groups, head_dim, bias_spec, block_sizes, backend,
            interpret, itemsize, segmented):
  min_tile = _MIN_QUERY_TILE[backend]
  if backend == 'gpu' and not interpret and min(
      block_sizes.block_k, block_sizes.block_k_dkv) < 16:
    raise ValueError(f'Triton dots need key tiles of at least 16 entries; got '
                     f'{block_sizes}.')
  # TPU: K/V tiles start on a (16, 128) sublane tile, which fits bf16 and f32,
  # so their element-offset windows are whole-tile DMAs.
  align = 16 if backend == 'tpu' else 1
  tables = tables_lib.tile_tables(layout, block_sizes.block_q, block_sizes.block_k,
                                  block_sizes.block_k_dkv, min_tile, align)
  pieces, num_buckets_padded = None, 1
  if bias_spec is not None:
    num_buckets, max_distance, bidirectional = bias_spec
    lookup = common.RelativePositionBias(
        None, num_buckets, max_distance, bidirectional).bucket_lookup_table()
    pieces = tables_lib.bias_pieces(tuple(int(x) for x in lookup), max_distance)
    num_buckets_padded = tables_lib.next_power_of_2(num_buckets)
  padded_head_dim = max(16, tables_lib.next_power_of_2(head_dim))
  vmem_limit = None
  if backend == 'tpu' and interpret is False:
    vmem_limit = tpu_kernels.check_fits(tables, groups, padded_head_dim, itemsize,
                                        num_buckets_padded)
  return tile_math.KernelConfig(layout, tables, scale, groups, head_dim,
                                padded_head_dim, pieces, num_buckets_padded,
                                block_sizes, backend, interpret, vmem_limit,
                                segmented)


def _check_inputs(q, k_flat, v_flat, entry_bias, layout):
  if q.ndim != 4 or k_flat.ndim != 4 or k_flat.shape != v_flat.shape:
    raise ValueError(f'q must be [batch, length, heads, head_dim] and k_flat/v_flat '
                     f'[batch, flat, kv_heads, head_dim]; got q {q.shape}, k_flat '
                     f'{k_flat.shape}, v_flat {v_flat.shape}.')
  if q.shape[1] != layout.length or k_flat.shape[1] != layout.flat_size:
    raise ValueError(f'layout is for length {layout.length} and flat size '
                     f'{layout.flat_size}; got q length {q.shape[1]} and k_flat '
                     f'{k_flat.shape[1]}: build the buffer with '
                     'pyramid.build_flat_kv(layout, ...).')
  if entry_bias.shape != k_flat.shape[:2]:
    raise ValueError(f'entry_bias must be [batch, flat] = {k_flat.shape[:2]}, got '
                     f'{entry_bias.shape}.')
  if q.shape[2] % k_flat.shape[2] or q.shape[3] != k_flat.shape[3]:
    raise ValueError(f'q heads {q.shape[2]} must be a multiple of kv heads '
                     f'{k_flat.shape[2]} and head_dims must match ({q.shape[3]} vs '
                     f'{k_flat.shape[3]}).')


def tree_level_attention_pallas(q, k_flat, v_flat, entry_bias, layout: TreeLayout,
                                *, scale, position_bias=None, segment_ids=None,
                                block_sizes=None, interpret=None, backend=None):
  """Attention of `q [b, n, heads, d]` over the flat K/V buffer of `layout`.

  k_flat, v_flat: `[b, flat, kv_heads, d]`; entry_bias `[b, flat]` float32 (-inf =
  masked entry). segment_ids: `(q_segment_ids [b, n], entry_segment_ids [b,
  flat])` of packed examples (`pyramid.flat_segment_ids`): a query attends only
  entries of its own segment. Differentiable in q, k_flat, v_flat and
  position_bias.table.
  block_sizes: `BlockSizes` (default per backend). interpret: run the kernels in
  Pallas' interpreter (default: on CPU); with backend='tpu' a
  `pltpu.InterpretParams()` selects the stricter TPU interpreter. backend: 'gpu'
  (Triton lowering) or 'tpu' (Mosaic); default the JAX backend ('gpu' on CPU).
  """
  _check_inputs(q, k_flat, v_flat, entry_bias, layout)
  common.check_position_bias(position_bias, q.shape[2])
  platform = jax.default_backend()
  if backend is None:
    backend = 'tpu' if platform == 'tpu' else 'gpu'
  common.check_choice('backend', backend, BACKENDS)
  if interpret is None:
    interpret = platform not in BACKENDS
  if block_sizes is None:
    block_sizes = BlockSizes.get_default(None if interpret else backend)
  table, bias_spec = None, None
  if position_bias is not None:
    table = position_bias.table
    bias_spec = (position_bias.num_buckets, position_bias.max_distance,
                 position_bias.bidirectional)
  if not isinstance(interpret, pltpu.InterpretParams):
    interpret = bool(interpret)
  if segment_ids is not None:
    q_ids, entry_ids = segment_ids
    if q_ids.shape != q.shape[:2] or entry_ids.shape != k_flat.shape[:2]:
      raise ValueError(f'segment_ids must be ([batch, length] = {q.shape[:2]}, '
                       f'[batch, flat] = {k_flat.shape[:2]}), got '
                       f'({q_ids.shape}, {entry_ids.shape}).')
  config = _config(layout, float(scale), q.shape[2] // k_flat.shape[2], q.shape[3],
                   bias_spec, block_sizes, backend, interpret,
                   max(q.dtype.itemsize, k_flat.dtype.itemsize),
                   segment_ids is not None)
  entry_bias = lax.stop_gradient(entry_bias)
  attend = functools.partial(_call_tree_attention, config=config)
  return sharding.per_shard(attend, q, k_flat, v_flat, entry_bias, table,
                            segment_ids)


def _call_tree_attention(q, k_flat, v_flat, entry_bias, table, segment_ids, *,
                         config):
  segments = _segment_inputs(segment_ids, q.shape[2], config)
  return _tree_attention(q, k_flat, v_flat, entry_bias, table, segments, config)


def tree_level_attention_reference(q, k_flat, v_flat, entry_bias, layout, *, scale,
                                   position_bias=None, query_rows=None):
  """Dense jnp oracle over the flat buffer: `[n, flat]` scores, then softmax.

  query_rows: optional token positions; then only those queries are computed
  (output `[b, len(query_rows), heads, d]`), so long inputs can be checked on a
  sample of rows without the whole `[n, flat]` score matrix.
  """
  index, valid = layout.gather_index
  attended = np.zeros((layout.num_query_blocks, layout.flat_size), bool)
  rows = np.broadcast_to(np.arange(layout.num_query_blocks)[:, None], index.shape)
  attended[rows[valid], index[valid]] = True
  query_pos = np.arange(layout.length)
  if query_rows is not None:
    query_pos = np.asarray(query_rows)
    q = q[:, query_pos]
  attended = attended[query_pos // layout.query_block]       # [n, flat]
  lo, hi = layout.entry_lo_hi
  query_pos = query_pos[:, None]
  allowed = jnp.asarray(attended) & static_entry_mask(
      jnp.asarray(query_pos), jnp.asarray(lo[None]), jnp.asarray(hi[None]), layout)
  bias = jnp.where(allowed[None, None], entry_bias[:, None, None, :],
                   common.MASKED)                            # [b, 1, n, flat]
  if position_bias is not None:
    rel = relative_position_to_window(query_pos, lo[None], hi[None])
    values = position_bias.bias(jnp.asarray(rel))           # [n, flat, heads]
    bias = bias + jnp.transpose(values, (2, 0, 1))[None]
  return common.masked_dense_attention(q, k_flat, v_flat, bias, scale)

"""Tree-level block attention with one sequence split across devices.

Under `jax.shard_map` over a mesh axis of `P` devices (the Partitioner's
`sequence` axis), device d holds tokens `[d*c, (d+1)*c)` of q, k and v (the
sequence padded to a multiple of P). A query block of a TreeLayout reads a few
spans of the flat buffer: its neighbourhood at full resolution and pooled
entries farther away, so a device needs far fewer remote entries than the
whole sequence holds (fovea: one or two per block of the prefix, since its
windows wider than a block start at every block; FMA: a few per level, since
its windows are aligned to their size). It fetches exactly those:

1. Contributions. Each device pools its own chunk: its raw tokens, and per
   pooled segment the partial window sums and valid counts of the windows that
   touch the chunk (a window across chunks gets one partial sum from each
   device it touches). A learned FMA level contributes its filters applied to
   the chunk's tokens of each group (the filter is linear in the tokens).
2. Exchange. For every shift `s = 1 .. P-1` one `ppermute` sends the
   contributions device `d + s` reads (a table per device, padded to the
   longest of the shift).
3. Assembly. Each device adds its own and the received contributions into its
   local flat buffer (the entries its query blocks read, in global order),
   divides pooled sums by their counts, and runs the engine over a local
   TreeLayout whose entry windows are in the coordinates of its first query
   block: causal, sliding-window and relative-position rules depend only on
   differences of positions, so they hold unchanged.

Everything positional is planned on the host once per (layout, P). Chunks and
query blocks need not line up: a block cut by a chunk boundary is run by both
devices, each for its own queries. The per-device programs differ in their
static tables, so they are `lax.switch` branches on the device's index. Dense
attention runs through the same path (its blocks read every earlier key, so
its exchange moves what an all-gather of K/V moves); cross-attention, whose
queries and keys are different sequences, all-gathers K/V.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from fovea_jax.attention import common
from fovea_jax.attention import engines
from fovea_jax.attention import fma as fma_lib
from fovea_jax.attention import pyramid
from fovea_jax.attention.layout import PyramidSegment
from fovea_jax.attention.layout import TreeLayout
from fovea_jax.sharding import attention_axes
from fovea_jax.sharding import axis_names

# The mesh axis a sequence is split over.
SEQUENCE_AXIS = axis_names.SEQUENCE


def sequence_mesh(axis_name: str = SEQUENCE_AXIS):
  """The mesh of the current context if it splits `axis_name` over more than
  one device, else None (attention then runs on whole sequences)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty or axis_name not in mesh.axis_names:
    return None
  if axis_name in mesh.manual_axes:  # already inside a sharded call
    return None
  return mesh if mesh.shape[axis_name] > 1 else None


@dataclasses.dataclass(frozen=True)
class _Pooled:
  """How one device computes one pooled segment's contributions.

  The device pools a virtual array of `tokens` tokens starting at global token
  `first_token` (its chunk, zero elsewhere) over `local`, the segment's windows
  `first_entry ..` relative to `first_token`; a learned level (`group`) applies
  its filters to whole groups of that array instead.
  """
  index: int
  first_entry: int
  local: PyramidSegment
  first_token: int
  tokens: int
  group: Optional[fma_lib.FmaLevel] = None


@dataclasses.dataclass(frozen=True, eq=False)
class _DevicePlan:
  """One device's static tables (numpy)."""
  pooled: tuple           # _Pooled of the segments whose windows touch the chunk
  num_rows: int           # contribution rows (chunk tokens, then pooled entries)
  own_rows: np.ndarray    # [own_len] rows this device reads itself (num_rows: none)
  own_pos: np.ndarray     # [own_len] their local buffer positions (flat: none)
  send_rows: tuple        # per shift, [send_len] rows sent to device d + shift
  recv_pos: tuple         # per shift, [send_len] positions of what arrives
  layout: TreeLayout      # the local layout over the local buffer
  entries: np.ndarray     # [flat] global flat index of every local entry
  real: np.ndarray        # [flat] False on the padding past this device's
  divide: np.ndarray      # [flat] pooled means (sum / count)
  log_count: np.ndarray   # [flat] logit + ln(count)
  fixed_bias: np.ndarray  # [flat] constant logit term (ln window or 0)
  query_offset: int       # first own query in the local query array


@dataclasses.dataclass(frozen=True, eq=False)
class ShardedPlan:
  """The host plan of one layout split over `num_shards` devices."""
  num_shards: int
  chunk: int
  shifts: tuple           # shifts with something to send
  send_len: tuple         # rows sent per shift
  own_len: int
  flat_size: int          # local buffer entries (the largest device's)
  local_queries: int      # local query array length (whole blocks)
  devices: tuple

  def received_entries(self) -> int:
    """Entries (of K and of V) each device receives per call."""
    return int(sum(self.send_len))


def _needed(layout: TreeLayout, first_block, last_block):
  """`[flat_size]` bool: entries the spans of blocks `first..last` read."""
  starts = layout.span_start[first_block:last_block + 1].ravel()
  lens = layout.span_len[first_block:last_block + 1].ravel()
  used = lens > 0
  diff = np.zeros(layout.flat_size + 1, np.int64)
  np.add.at(diff, starts[used], 1)
  np.add.at(diff, starts[used] + lens[used], -1)
  return np.cumsum(diff[:-1]) > 0


def _pooled_parts(layout: TreeLayout, learned, first, last):
  """The `_Pooled` of every segment with windows touching tokens
  `[first, last)`, and their entries' flat indices."""
  parts, flats = [], []
  for index, seg in enumerate(layout.segments):
    if index == 0:
      continue
    if index in learned:
      group = learned[index]
      g0 = first // group.group_size
      g1 = min(group.num_groups, -(-last // group.group_size)) - 1
      if g1 < g0:
        continue
      per_group = group.group_size // group.window
      count = (g1 - g0 + 1) * per_group
      part = _Pooled(index, g0 * per_group,
                     PyramidSegment(group.window, group.window, 0, count, 0,
                                    side=seg.side),
                     g0 * group.group_size, count * group.window,
                     dataclasses.replace(group, num_groups=g1 - g0 + 1,
                                         num_entries=count))
    else:
      # Windows i with fs + i*grid < last and fs + i*grid + window > first.
      i0 = max(0, -(-(first - seg.window + 1 - seg.first_start) // seg.grid))
      i1 = min(seg.num_starts - 1, (last - 1 - seg.first_start) // seg.grid)
      if i1 < i0:
        continue
      # Cells of `grid` tokens (aligned to the segment's windows) over the chunk.
      cell0 = seg.first_start + (first - seg.first_start) // seg.grid * seg.grid
      cell1 = seg.first_start + -(-(last - seg.first_start) // seg.grid) * seg.grid
      local = PyramidSegment(seg.window, seg.grid,
                             seg.first_start + i0 * seg.grid - cell0,
                             i1 - i0 + 1, 0, side=seg.side)
      part = _Pooled(index, i0, local, cell0, cell1 - cell0)
    parts.append(part)
    flats.append(seg.flat_index(part.first_entry +
                                np.arange(part.local.num_starts)))
  return tuple(parts), flats


@functools.lru_cache(maxsize=32)
def plan(layout: TreeLayout, num_shards: int, learned_segments=()) -> ShardedPlan:
  """The plan of `layout` with its (padded) sequence split `num_shards` ways.

  `learned_segments`: `((segment index, FmaLevel), ...)` pooled segments whose
  entries are learned FMA filters of their groups rather than window means.
  """
  learned = dict(learned_segments)
  tq = layout.query_block
  length = layout.length
  chunk = -(-length // num_shards)
  lo, hi = layout.entry_lo_hi
  # Per device: its query blocks, the entries they read, and where each goes.
  blocks, needs, ranks = [], [], []
  for d in range(num_shards):
    first, last = d * chunk, min((d + 1) * chunk, length)
    if first >= last:
      blocks.append(None)
      needs.append(np.zeros(layout.flat_size, bool))
    else:
      b0, b1 = first // tq, (last - 1) // tq
      blocks.append((b0, b1))
      needs.append(_needed(layout, b0, b1))
    ranks.append(np.cumsum(needs[-1]) - 1)
  flat_size = max(1, max(int(n.sum()) for n in needs))
  num_blocks = max(1, max(b1 - b0 + 1 for b0, b1 in filter(None, blocks)))
  # Contribution rows: the chunk's tokens, then each pooled segment's windows.
  rows, pooled = [], []
  for d in range(num_shards):
    first, last = d * chunk, (d + 1) * chunk
    tokens = np.arange(first, last)
    token_flat = np.where(tokens < layout.token_length,
                          layout.segments[0].offset + tokens, -1)
    parts, flats = _pooled_parts(layout, learned, first,
                                 min(last, layout.token_length))
    rows.append(np.concatenate([token_flat] + flats).astype(np.int64))
    pooled.append(parts)

  def reads(d, r):
    """Rows of device d's contributions that device r reads, and where."""
    flat = rows[d]
    hit = np.nonzero((flat >= 0) & needs[r][np.maximum(flat, 0)])[0]
    return hit, ranks[r][flat[hit]]

  own = [reads(d, d) for d in range(num_shards)]
  own_len = max(1, max(len(h) for h, _ in own))
  shifts, send_len, sends, recvs = [], [], [], []
  for s in range(1, num_shards):
    pairs = [reads(d, (d + s) % num_shards) for d in range(num_shards)]
    width = max(len(h) for h, _ in pairs)
    if width == 0:
      continue
    shifts.append(s)
    send_len.append(width)
    sends.append([_pad(h, width, len(rows[d])) for d, (h, _) in enumerate(pairs)])
    # What device r receives at shift s was sent by device r - s.
    recvs.append([_pad(pairs[(r - s) % num_shards][1], width, flat_size)
                  for r in range(num_shards)])

  seg_of_flat = np.searchsorted([seg.offset for seg in layout.segments],
                                np.arange(layout.flat_size), side='right') - 1
  segs = layout.segments
  seg_divides = np.array([seg.window > 1 and i not in learned
                          for i, seg in enumerate(segs)])
  seg_log_count = np.array([seg.logit_correction == 'log_count' for seg in segs])
  seg_fixed = np.array([np.log(seg.window) if seg.logit_correction ==
                        'log_window' else 0.0 for seg in segs], np.float32)
  devices = []
  for d in range(num_shards):
    entries = np.nonzero(needs[d])[0]
    b0, b1 = blocks[d] if blocks[d] is not None else (0, -1)
    shift_pos = b0 * tq
    span_start = np.zeros((num_blocks, layout.span_start.shape[1]), np.int32)
    span_len = np.zeros_like(span_start)
    if b1 >= b0:
      glob_start = layout.span_start[b0:b1 + 1]
      glob_len = layout.span_len[b0:b1 + 1]
      span_len[:b1 - b0 + 1] = glob_len
      span_start[:b1 - b0 + 1] = np.where(
          glob_len > 0, ranks[d][np.minimum(glob_start, layout.flat_size - 1)], 0)
    win_lo = np.ones(flat_size, np.int32)
    win_hi = np.zeros(flat_size, np.int32)
    win_lo[:entries.size] = lo[entries] - shift_pos
    win_hi[:entries.size] = hi[entries] - shift_pos
    kind = seg_of_flat[entries]
    divide = np.zeros(flat_size, bool)
    log_count = np.zeros(flat_size, bool)
    fixed = np.zeros(flat_size, np.float32)
    divide[:entries.size] = seg_divides[kind]
    log_count[:entries.size] = seg_log_count[kind]
    fixed[:entries.size] = seg_fixed[kind]
    local = TreeLayout(
        length=num_blocks * tq, query_block=tq, num_query_blocks=num_blocks,
        token_length=flat_size,
        segments=(PyramidSegment(1, 1, 0, flat_size, 0),),
        span_start=span_start, span_len=span_len, causal=layout.causal,
        window=layout.window, windows=(win_lo, win_hi))
    devices.append(_DevicePlan(
        pooled=pooled[d], num_rows=len(rows[d]),
        own_rows=_pad(own[d][0], own_len, len(rows[d])),
        own_pos=_pad(own[d][1], own_len, flat_size),
        send_rows=tuple(table[d] for table in sends),
        recv_pos=tuple(table[d] for table in recvs), layout=local,
        entries=_pad(entries, flat_size, 0),
        real=np.arange(flat_size) < entries.size,
        divide=divide, log_count=log_count, fixed_bias=fixed,
        query_offset=d * chunk - shift_pos))
  return ShardedPlan(num_shards, chunk, tuple(shifts), tuple(send_len), own_len,
                     flat_size, num_blocks * tq, tuple(devices))


def _pad(x, width, fill):
  out = np.full(width, fill, np.int32)
  out[:len(x)] = x
  return out


def _virtual(x, part: _Pooled, first):
  """`x [batch, chunk, ...]` (tokens from `first`) placed in the part's
  virtual array of `part.tokens` tokens from `part.first_token`."""
  begin = max(first, part.first_token)
  end = min(first + x.shape[1], part.first_token + part.tokens)
  piece = x[:, begin - first:end - first]
  widths = [(0, 0), (begin - part.first_token,
                     part.first_token + part.tokens - end)]
  return jnp.pad(piece, widths + [(0, 0)] * (x.ndim - 2))


def _ids_at(ids, positions):
  """`ids [batch, G]` at static token positions, clipped to the ends (the
  ids of positions outside the sequence are the nearest token's)."""
  return jnp.take(ids, jnp.asarray(np.clip(positions, 0, ids.shape[1] - 1)),
                  axis=1)


def _contributions(dev: _DevicePlan, first, k, v, valid, filters, ids=None,
                   window_ids=None):
  """`(k_rows, v_rows, counts)`: the device's contribution rows, float32,
  with a zero row appended (what padded table slots read).

  Packed rows: `ids [batch, G]` the whole sequence's segment ids (padded as
  `common.pad_segment_ids`), `window_ids {segment index: [batch,
  num_starts]}` the segment of every window of the learned levels.
  """
  keep = valid[:, :, None, None]
  k_rows = [k.astype(jnp.float32) * keep]
  v_rows = [v.astype(jnp.float32) * keep]
  c_rows = [valid]
  for part in dev.pooled:
    vk, vv, vc = (_virtual(x, part, first) for x in (k_rows[0], v_rows[0], valid))
    segmented, vids = None, None
    if ids is not None:
      local = part.local
      vids = _ids_at(ids, part.first_token + np.arange(part.tokens))
      # The cells every window starts at, from the whole sequence's ids: a
      # window may reach past this device's tokens.
      starts = (part.first_token + local.first_start +
                np.arange(local.num_starts + local.interleave - 1) * local.grid)
      ends = (_ids_at(ids, starts), _ids_at(ids, starts + local.grid - 1))
      segmented = pyramid.segmented_windows(local, part.tokens, vids, ends)
    counts = pyramid.window_sums(vc, part.local, part.tokens, segmented)
    if part.group is not None:
      entry_ids = None
      if ids is not None:
        entry_ids = (window_ids[part.index][
            :, part.first_entry:part.first_entry + part.local.num_starts],)
      k_lvl, v_lvl = fma_lib.grouped_conv_levels(
          vk, vv, {part.group.level: filters[part.index]}, (part.group,),
          vids, entry_ids)
      k_part, v_part = k_lvl[0], v_lvl[0]
    else:
      k_part, v_part = (pyramid.window_sums(x, part.local, part.tokens,
                                            segmented) for x in (vk, vv))
    k_rows.append(k_part.astype(jnp.float32))
    v_rows.append(v_part.astype(jnp.float32))
    c_rows.append(counts)
  zero = lambda x: jnp.zeros_like(x[:, :1])
  k_all = jnp.concatenate(k_rows + [zero(k_rows[0])], axis=1)
  v_all = jnp.concatenate(v_rows + [zero(v_rows[0])], axis=1)
  c_all = jnp.concatenate(c_rows + [zero(valid)], axis=1)
  return k_all, v_all, c_all


def _take_rows(rows, index):
  return tuple(jnp.take(x, jnp.asarray(index), axis=1) for x in rows)


def _local_flat(dev: _DevicePlan, flat_size, pieces, positions, dtype):
  """The local flat buffer `(k, v, entry_bias)` from contribution pieces."""
  pos = jnp.asarray(np.concatenate(positions))
  k_in, v_in, c_in = (jnp.concatenate([p[i] for p in pieces], axis=1)
                      for i in range(3))
  batch = k_in.shape[0]

  def scatter(x):
    out = jnp.zeros((batch, flat_size + 1) + x.shape[2:], x.dtype)
    return out.at[:, pos].add(x)[:, :flat_size]

  k_sum, v_sum, counts = scatter(k_in), scatter(v_in), scatter(c_in)
  denom = jnp.where(jnp.asarray(dev.divide), jnp.maximum(counts, 1.0), 1.0)
  k_flat = (k_sum / denom[:, :, None, None]).astype(dtype)
  v_flat = (v_sum / denom[:, :, None, None]).astype(dtype)
  correction = jnp.where(jnp.asarray(dev.log_count),
                         jnp.log(jnp.maximum(counts, 1.0)),
                         jnp.asarray(dev.fixed_bias))
  entry_bias = jnp.where(counts > 0, correction, common.MASKED)
  return k_flat, v_flat, jax.lax.stop_gradient(entry_bias)


def _sharded_call(layout, the_plan: ShardedPlan, axis_name, engine, scale,
                  bias_spec, return_lse, q, k, v, valid, table, filters,
                  segments):
  """The per-device body (inside shard_map): local chunks in, local out.
  `segments`: None, or `(this chunk's query ids, the whole sequence's key
  ids)` of packed rows."""
  index = jax.lax.axis_index(axis_name)
  chunk = the_plan.chunk
  ids = window_ids = flat_ids = None
  if segments is not None:
    q_ids, ids = segments
    tokens = layout.token_length
    window_ids = {i: pyramid.window_segment_ids(layout.segments[i], tokens,
                                                ids[:, :tokens])
                  for i in filters}
    flat_ids = pyramid.flat_segment_ids(layout, ids[:, :tokens])

  def contribute(d):
    dev = the_plan.devices[d]

    def branch(k, v, valid, filters):
      rows = _contributions(dev, d * chunk, k, v, valid, filters, ids,
                            window_ids)
      own = _take_rows(rows, dev.own_rows)
      return own, tuple(_take_rows(rows, r) for r in dev.send_rows)
    return branch

  own, sends = jax.lax.switch(
      index, [contribute(d) for d in range(the_plan.num_shards)],
      k, v, valid, filters)
  received = []
  for shift, piece in zip(the_plan.shifts, sends):
    perm = [(d, (d + shift) % the_plan.num_shards)
            for d in range(the_plan.num_shards)]
    received.append(tuple(jax.lax.ppermute(x, axis_name, perm) for x in piece))

  def attend(d):
    dev = the_plan.devices[d]

    def branch(q, own, received, table):
      k_flat, v_flat, entry_bias = _local_flat(
          dev, the_plan.flat_size, [own] + list(received),
          [dev.own_pos] + list(dev.recv_pos), k.dtype)
      offset = dev.query_offset
      widths = (offset, the_plan.local_queries - offset - chunk)
      q_local = jnp.pad(q, ((0, 0), widths, (0, 0), (0, 0)))
      position_bias = (None if table is None else
                       common.RelativePositionBias(table, *bias_spec))
      options = dict(return_lse=True) if return_lse else {}
      if segments is not None:
        entry_ids = jnp.where(jnp.asarray(dev.real),
                              jnp.take(flat_ids, jnp.asarray(dev.entries),
                                       axis=1), -1)
        # Query slots of other devices match no entry.
        local_ids = jnp.pad(q_ids, ((0, 0), widths), constant_values=-2)
        options['segment_ids'] = (local_ids, entry_ids)
      result = engine(q_local, k_flat, v_flat, entry_bias, dev.layout,
                      scale=scale, position_bias=position_bias, **options)
      if return_lse:
        return tuple(x[:, offset:offset + chunk] for x in result)
      return result[:, offset:offset + chunk]
    return branch

  return jax.lax.switch(index, [attend(d) for d in range(the_plan.num_shards)],
                        q, own, tuple(received), table)


def tree_attention(layout: TreeLayout, q, k, v, valid, *, scale, position_bias,
                   implementation, mesh, return_lse=False, learned_levels=None,
                   q_segment_ids=None, kv_segment_ids=None,
                   axis_name: str = SEQUENCE_AXIS):
  """`run_tree_layout` with the sequence of q, k, v split over `axis_name`.

  q, k, v: global `[batch, length, heads, head_dim]` arrays (inside `jit`),
  valid `[batch, length]` bool; `learned_levels` `{segment index: (FmaLevel,
  (key_filter, value_filter))}` for learned FMA levels; `q/kv_segment_ids`
  `[batch, length]` for packed rows (every device then also receives the
  whole row's key ids, 4 bytes a token). Returns what the engine returns for
  the whole sequence, computed sequence-parallel.
  """
  learned_levels = learned_levels or {}
  num_shards = mesh.shape[axis_name]
  batch, length, heads, _ = q.shape
  kv_heads = k.shape[2]
  the_plan = plan(layout, num_shards,
                  tuple((i, level) for i, (level, _) in
                        sorted(learned_levels.items())))
  padded = the_plan.chunk * num_shards
  q, k, v, valid = (common.pad_length(x, padded) for x in (q, k, v, valid))
  batch_axis, heads_axis = attention_axes.batch_and_heads_axes(
      mesh, batch, heads, kv_heads)
  x_spec = PartitionSpec(batch_axis, axis_name, heads_axis, None)
  row_spec = PartitionSpec(batch_axis, axis_name)
  table, bias_spec = None, None
  if position_bias is not None:
    table = position_bias.table
    bias_spec = (position_bias.num_buckets, position_bias.max_distance,
                 position_bias.bidirectional)
  filters = {i: f for i, (_, f) in learned_levels.items()}
  segments, segment_specs = None, None
  if kv_segment_ids is not None:
    whole = max(padded, layout.token_length)
    segments = (common.pad_segment_ids(q_segment_ids, padded),
                common.pad_segment_ids(kv_segment_ids, whole))
    segment_specs = (row_spec, PartitionSpec(batch_axis, None))
  body = functools.partial(
      _sharded_call, layout, the_plan, axis_name,
      engines.tree_engine(implementation),
      float(common.default_scale(scale, q.shape[-1])), bias_spec, return_lse)
  out_specs = ((x_spec, PartitionSpec(batch_axis, axis_name, heads_axis))
               if return_lse else x_spec)
  result = jax.shard_map(
      body, mesh=mesh,
      in_specs=(x_spec, x_spec, x_spec, row_spec,
                None if table is None else PartitionSpec(None, heads_axis),
                jax.tree.map(lambda _: PartitionSpec(), filters),
                segment_specs),
      out_specs=out_specs, check_vma=False)(
          q, k, v, valid.astype(jnp.float32), table, filters, segments)
  if return_lse:
    return tuple(x[:, :length] for x in result)
  return result[:, :length]


def gather_attention(attend, q, k, v, valid, *, mesh, q_segment_ids=None,
                     kv_segment_ids=None, axis_name: str = SEQUENCE_AXIS):
  """Cross-attention with both sequences split over `axis_name`: every device
  all-gathers K/V (and the key mask and segment ids) and runs `attend(q_chunk,
  k, v, valid, q_ids, kv_ids)` for its own queries (non-causal and without a
  position bias, so a query's position does not matter)."""
  num_shards = mesh.shape[axis_name]
  q_len, k_len = q.shape[1], k.shape[1]
  q_pad = -(-q_len // num_shards) * num_shards
  k_pad = -(-k_len // num_shards) * num_shards
  q = common.pad_length(q, q_pad)
  k, v, valid = (common.pad_length(x, k_pad) for x in (k, v, valid))
  segments = None
  if kv_segment_ids is not None:
    segments = (common.pad_segment_ids(q_segment_ids, q_pad),
                common.pad_segment_ids(kv_segment_ids, k_pad))
  batch_axis, _ = attention_axes.batch_and_heads_axes(
      mesh, q.shape[0], q.shape[2], k.shape[2])
  x_spec = PartitionSpec(batch_axis, axis_name, None, None)
  row_spec = PartitionSpec(batch_axis, axis_name)

  def body(q, k, v, valid, segments):
    gather = lambda x: jax.lax.all_gather(x, axis_name, axis=1, tiled=True)
    k, v, valid = (gather(x) for x in (k, v, valid))
    q_ids = kv_ids = None
    if segments is not None:
      q_ids, kv_ids = segments[0], gather(segments[1])
    return attend(q, k, v, valid, q_ids, kv_ids)

  out = jax.shard_map(
      body, mesh=mesh,
      in_specs=(x_spec, x_spec, x_spec, row_spec,
                None if segments is None else (row_spec, row_spec)),
      out_specs=x_spec, check_vma=False)(q, k, v, valid, segments)
  return out[:, :q_len]


def rows_attention(attend, q, rows, shared, table, *, mesh,
                   axis_name: str = SEQUENCE_AXIS):
  """`attend(q_rows, rows, shared, table, first_row=...)` for each device's
  rows of a sequence split over `axis_name`: q `[batch, length, heads, d]`
  and the `[batch, length]` arrays of `rows` are split, `shared` (`[batch,
  ...]` arrays) and `table` are whole on every device. LongT5 TGlobal's
  global tokens: every query reads all of them, so nothing is exchanged."""
  num_shards = mesh.shape[axis_name]
  length = q.shape[1]
  chunk = -(-length // num_shards)
  padded = chunk * num_shards
  q = common.pad_length(q, padded)
  rows = {k: common.pad_length(v, padded) for k, v in rows.items()}
  batch_axis, _ = attention_axes.batch_and_heads_axes(
      mesh, q.shape[0], q.shape[2], q.shape[2])
  x_spec = PartitionSpec(batch_axis, axis_name, None, None)
  row_spec = PartitionSpec(batch_axis, axis_name)
  whole = lambda x: PartitionSpec(batch_axis, *(None,) * (x.ndim - 1))

  def body(q, rows, shared, table):
    # A static first row per device (its rows' alignment to groups is static).
    branches = [functools.partial(attend, first_row=d * chunk)
                for d in range(num_shards)]
    return jax.lax.switch(jax.lax.axis_index(axis_name), branches, q, rows,
                          shared, table)

  out, lse = jax.shard_map(
      body, mesh=mesh,
      in_specs=(x_spec, jax.tree.map(lambda _: row_spec, rows),
                jax.tree.map(whole, shared),
                None if table is None else PartitionSpec()),
      out_specs=(x_spec, PartitionSpec(batch_axis, axis_name, None)),
      check_vma=False)(q, rows, shared, table)
  return out[:, :length], lse[:, :length]

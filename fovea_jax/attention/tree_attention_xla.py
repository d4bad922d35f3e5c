"""Tree-level block attention in plain XLA: gather each query block's spans.

The efficient path on CPU (and the fallback elsewhere). Query blocks are processed in
chunks by `lax.scan`, so memory is O(chunk * keys per block) for scores plus O(n) for
the flat buffer; there is never an `[n, n]` array. The backward pass is flash-style
(`jax.custom_vjp`): it saves only the output and the log-sum-exp and recomputes each
chunk's scores, scattering key/value gradients back into the flat buffer.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from fovea_jax.attention.common import MASKED
from fovea_jax.attention.common import RelativePositionBias
from fovea_jax.attention.layout import TreeLayout
from fovea_jax.attention.layout import array_module
from fovea_jax.attention.layout import relative_position_to_window
from fovea_jax.attention.layout import static_entry_mask

# Scores of one scan step (logits, weights, bias; float32) stay under this budget.
# Small enough that a step's scores stay in the CPU's caches: at 4k tokens, 4
# heads, a 4 MiB budget (one query block per step) ran the forward 3.5x and
# forward+backward 2.6x faster than 384 MiB (32 blocks per step), measured side by
# side; per-step overhead of the scan is small next to one block's work.
DEFAULT_CHUNK_BYTES = 4 * 2**20


# At most this many distinct static bias patterns per call for the typed path.
MAX_BLOCK_TYPES = 8


def _block_types(layout, padded_blocks, max_distance):
  """Distinct static score patterns of the query blocks, when there are few.

  A block's static pattern is, per (query slot, key slot), the clipped distance
  of the T5 bias (`max_distance` 0: no bias) or "masked" (causal, window, unused
  slot). Sliding windows have 2-3 patterns (the edges and the interior), so the
  bias and masks of a whole call are `[types, T, keys]` built once, and the bias
  gradient a sum per type instead of a scatter per score: that scatter and the
  per-score lookups cost a third of the LongT5-local training step at 4k tokens.
  Fovea's coarse windows give every block its own pattern (None, None).
  Returns `([types, T, keys] codes in [0, 2 * max_distance + 1], [blocks] type,
  [types] first block of each type)`; code `2 * max_distance + 1` is "masked".
  """
  index, valid = layout.gather_index
  lo, hi = layout.entry_lo_hi
  tq, blocks = layout.query_block, layout.num_query_blocks
  masked = 2 * max_distance + 1
  codes, block_type = {}, np.zeros(padded_blocks, np.int32)
  for block in range(padded_blocks):
    if block < blocks:
      query_pos = block * tq + np.arange(tq)[:, None]
      code = _pattern_codes(query_pos, lo[index[block]][None],
                            hi[index[block]][None], valid[block][None], layout,
                            max_distance)
    else:
      code = np.full((tq, index.shape[1]), masked, np.int32)
    block_type[block] = codes.setdefault(code.tobytes(),
                                         (len(codes), code, block))[0]
    if len(codes) > MAX_BLOCK_TYPES:
      return None, None, None
  ordered = sorted(codes.values(), key=lambda item: item[0])
  return (np.stack([code for _, code, _ in ordered]), block_type,
          np.array([block for _, _, block in ordered], np.int32))


class _Plan:
  """Static tables of the scan (numpy, built once per layout/shape).

  The scan runs over (kv head, chunk of query blocks) pairs, head-major: one
  step's scores are one kv head's group of query heads over `chunk` blocks, small
  enough to stay in the CPU's caches, and a head's key/value gradients are
  accumulated by consecutive steps. Per-chunk tables are tiled over the heads.

  Only the layout's spans reach the program (`[steps, chunk, max_spans]`); each
  step expands its blocks' spans into key indices and token windows
  (`_entry_tables`). Expanded on the host, the `[blocks, keys]` tables were
  constants of several MiB per table and layer (fovea at 64k: 10 MiB each) that
  XLA copied and folded at compile time.
  """

  def __init__(self, layout: TreeLayout, chunk: int, kv_heads: int,
               max_distance: int):
    self.kv_heads = kv_heads
    index, valid = layout.gather_index
    blocks = layout.num_query_blocks
    self.chunk = chunk
    self.num_chunks = -(-blocks // chunk)
    padded = self.num_chunks * chunk
    self.keys = index.shape[1]

    def chunked(x):
      out = np.zeros((padded,) + x.shape[1:], x.dtype)
      out[:blocks] = x
      return out.reshape((self.num_chunks, chunk) + x.shape[1:])

    def per_head(x):
      return np.concatenate([x] * kv_heads)

    # Every block attends the whole flat buffer in order (non-causal dense).
    self.whole_buffer = bool(valid.all() and self.keys == layout.flat_size and
                             (index == np.arange(self.keys)).all())
    self.max_distance = max_distance
    self.type_codes, block_type, type_block = _block_types(layout, padded,
                                                           max_distance)
    steps = dict(span_start=per_head(chunked(layout.span_start)),
                 span_len=per_head(chunked(layout.span_len)),
                 first_block=per_head(np.arange(self.num_chunks, dtype=np.int32) *
                                      chunk),
                 head=np.repeat(np.arange(kv_heads, dtype=np.int32),
                                self.num_chunks))
    if self.typed:
      steps['block_type'] = per_head(block_type.reshape(self.num_chunks, chunk))
      # The spans of one block per type (a padding block has none: row
      # `blocks` of the zero-padded tables), from which the program rebuilds
      # the `[types, T, keys]` patterns.
      self.type_block = type_block
      self.type_spans = tuple(
          chunked(table).reshape(padded, -1)[type_block]
          for table in (layout.span_start, layout.span_len))
    self.steps = steps

  @property
  def typed(self):
    """True when every block's static bias is one of a few `type_codes`."""
    return self.type_codes is not None

  @property
  def unmasked(self):
    """True when no (query, key) pair is masked statically and there is no T5
    bias: the static bias would be all zeros, so nothing is added. Dense
    cross-attention over whole blocks: at 64k keys the zeros were a 32 MiB
    constant XLA spent 2 s folding, then read at every step."""
    return (self.typed and self.max_distance == 0 and
            not (self.type_codes == 2 * self.max_distance + 1).any())

  @property
  def xs(self):
    return self.steps


def entry_windows(layout: TreeLayout):
  """`layout.entry_lo_hi` computed in the program from the segments (iotas, so
  XLA neither embeds nor folds an O(n) table); a layout with explicit
  `windows` (one device's share of a sharded sequence) passes them in."""
  if layout.windows is not None:
    return tuple(jnp.asarray(w, jnp.int32) for w in layout.windows)
  lo, hi = [], []
  for seg in layout.segments:
    natural = jnp.arange(seg.size, dtype=jnp.int32)
    start_index = (natural % seg.row_len) * seg.interleave + natural // seg.row_len
    starts = seg.first_start + start_index * seg.grid
    real = start_index < seg.num_starts
    lo.append(jnp.where(real, jnp.maximum(starts, 0), 1))
    hi.append(jnp.where(real, jnp.minimum(starts + seg.window, layout.length) - 1,
                        0))
  return jnp.concatenate(lo), jnp.concatenate(hi)


def _entry_tables(span_start, span_len, windows, keys):
  """`(index, valid, lo, hi)`, each `[..., keys]`, of blocks given by their spans.

  Slot j of a block is entry `start_s + j - begin_s` of the span s whose
  `[begin_s, end_s)` (running sums of the span lengths) holds j; slots past the
  last span are invalid (index 0, empty window).
  """
  ends = jnp.cumsum(span_len, axis=-1)
  slot = jnp.arange(keys, dtype=jnp.int32)
  span = jnp.sum(slot[:, None] >= ends[..., None, :], axis=-1)  # [..., keys]
  valid = span < span_len.shape[-1]
  span = jnp.minimum(span, span_len.shape[-1] - 1)
  start = jnp.take_along_axis(span_start, span, axis=-1)
  begin = jnp.take_along_axis(ends - span_len, span, axis=-1)
  index = jnp.where(valid, start + slot - begin, 0)
  lo_flat, hi_flat = windows
  lo = jnp.where(valid, jnp.take(lo_flat, index), 1)
  hi = jnp.where(valid, jnp.take(hi_flat, index), 0)
  return index, valid, lo, hi


def _pattern_codes(query_pos, lo, hi, valid, layout, max_distance):
  """Static score pattern: clipped distance code, or `2 * max_distance + 1` for
  masked (same rule in numpy on the host and in the program)."""
  xp = array_module(query_pos, lo, hi, valid)
  allowed = static_entry_mask(query_pos, lo, hi, layout) & valid
  distance = xp.clip(relative_position_to_window(query_pos, lo, hi),
                     -max_distance, max_distance) + max_distance
  return xp.where(allowed, distance, 2 * max_distance + 1).astype(xp.int32)


def _program_type_codes(plan, layout, windows):
  """`[types, T, keys]` codes of `plan.type_codes`, computed in the program."""
  index, valid, lo, hi = _entry_tables(*plan.type_spans, windows, plan.keys)
  del index
  tq = layout.query_block
  query_pos = (jnp.asarray(plan.type_block, jnp.int32)[:, None, None] * tq +
               jnp.arange(tq, dtype=jnp.int32)[None, :, None])
  return _pattern_codes(query_pos, lo[:, None], hi[:, None], valid[:, None],
                        layout, plan.max_distance)


def _choose_chunk(layout, batch, heads_per_step, chunk_bytes):
  """Query blocks per scan step; `heads_per_step`: query heads of one kv head."""
  keys = layout.gather_index[0].shape[1]
  per_block = 4 * 4 * batch * heads_per_step * layout.query_block * keys
  return int(max(1, min(layout.num_query_blocks, chunk_bytes // per_block)))


def _bias_by_distance(table, bias_spec, kv_heads):
  """`[kv_heads, groups, 2 * max_distance + 1]` T5 bias of every clipped distance.

  Looked up once per call: inside the scan each (query, entry) pair then needs one
  gather from this small table instead of a bucket lookup plus a table lookup.
  """
  num_buckets, max_distance, bidirectional = bias_spec
  pb = RelativePositionBias(table, num_buckets, max_distance, bidirectional)
  by_distance = pb.bias(jnp.arange(-max_distance, max_distance + 1))  # [D, H]
  heads = by_distance.shape[1]
  return by_distance.T.reshape(kv_heads, heads // kv_heads, -1)


def _static_bias(table, bias_spec, plan, codes):
  """`[kv_heads, types, groups, T, keys]` bias and masks of every block type.

  Without a table it holds only masks, the same for every head: one
  `[1, types, 1, T, keys]` copy (at 32k keys a per-head copy was a 64 MiB
  constant that XLA spent a second folding).
  """
  if table is None:
    by_distance = jnp.zeros((1, 1, 1), jnp.float32)
  else:
    by_distance = _bias_by_distance(table, bias_spec, plan.kv_heads)
  masked = jnp.full(by_distance.shape[:2] + (1,), MASKED, jnp.float32)
  per_code = jnp.concatenate([by_distance, masked], axis=-1)
  return jnp.swapaxes(jnp.take(per_code, codes, axis=2), 1, 2)


def _step_static_bias(static_bias, xs):
  """This step's `[chunk, groups|1, T, keys]` slice of `_static_bias`."""
  block_type, head = xs['block_type'], xs['head']
  if static_bias.shape[0] > 1:
    static_bias = _head_slice(static_bias, head, 0)
  return jnp.take(static_bias[0], block_type, axis=0)


def _chunk_logits(q_c, k_g, entry_bias_g, bias, tables, first_block, *, layout,
                  scale, max_distance, typed, same_segment=None):
  """Scores `[batch, kv_heads, chunk, groups * q_block, keys]` of one chunk.

  `bias` is this step's `_step_static_bias` if `typed`, else the head's
  `_bias_by_distance` (or None). `same_segment [batch, chunk, q_block, keys]`
  (packed examples): pairs of different segments are masked. Batch dimensions
  lead and rows precede keys, the natural layout of the product, so no
  score-sized transpose is needed here or in the backward pass.
  """
  _, valid, lo, hi = tables
  logits = jnp.einsum('bkcrd,bkcjd->bkcrj', q_c, k_g,
                      preferred_element_type=jnp.float32) * scale
  b, kv_heads, chunk, rows, keys = logits.shape
  tq = layout.query_block
  groups = rows // tq
  logits = logits.reshape(b, kv_heads, chunk, groups, tq, keys)
  logits = logits + entry_bias_g[:, None, :, None, None, :]
  if same_segment is not None:
    logits = jnp.where(same_segment[:, None, :, None], logits, MASKED)
  if typed:
    if bias is not None:  # None: `_Plan.unmasked`
      logits = logits + bias[None, None]
    return logits.reshape(b, kv_heads, chunk, rows, keys)
  bias_by_distance = bias
  query_pos = ((first_block + jnp.arange(chunk))[:, None] * tq +
               jnp.arange(tq)[None, :])[:, :, None]  # [chunk, tq, 1]
  lo, hi = lo[:, None, :], hi[:, None, :]
  allowed = static_entry_mask(query_pos, lo, hi, layout) & valid[:, None, :]
  if bias_by_distance is not None:
    distance = jnp.clip(relative_position_to_window(query_pos, lo, hi),
                        -max_distance, max_distance) + max_distance
    bias = jnp.take(bias_by_distance, distance, axis=2)  # [kvh, g, c, tq, keys]
    logits = logits + jnp.swapaxes(bias, 1, 2)[None]
  logits = jnp.where(allowed[None, None, :, None], logits, MASKED)
  return logits.reshape(b, kv_heads, chunk, rows, keys)


def _gather(flat, index, plan):
  """`flat [batch, kv_heads, n, d]`, `index [chunk, keys]` -> `[b, kvh, chunk, keys, d]`.

  When every block attends the whole buffer in order (non-causal dense), the
  gather would copy all keys at every step: the buffer is used as it is.
  """
  if plan.whole_buffer:
    return jnp.broadcast_to(flat[:, :, None], flat.shape[:2] + index.shape +
                            flat.shape[-1:])
  return jnp.take(flat, index, axis=2)


def _heads_major(flat):
  """`[batch, n, kv_heads, d]` -> `[batch, kv_heads, n, d]` (once per call)."""
  return jnp.swapaxes(flat, 1, 2)


def _split_queries(q, layout, plan):
  """`[b, n, heads, d]` -> `[kv_heads * num_chunks, b, 1, chunk, groups * tq, d]`."""
  b, _, heads, d = q.shape
  kv_heads, tq = plan.kv_heads, layout.query_block
  groups = heads // kv_heads
  n_pad = plan.num_chunks * plan.chunk * tq
  q = jnp.pad(q, ((0, 0), (0, n_pad - q.shape[1]), (0, 0), (0, 0)))
  q = q.reshape(b, plan.num_chunks, plan.chunk, tq, kv_heads, groups, d)
  q = jnp.transpose(q, (4, 1, 0, 2, 5, 3, 6))  # [kvh, nc, b, chunk, g, tq, d]
  return q.reshape(kv_heads * plan.num_chunks, b, 1, plan.chunk, groups * tq, d)


def _merge_queries(x, length, layout, plan):
  """Inverse of _split_queries."""
  _, b, _, chunk, rows, d = x.shape
  tq, kv_heads, num_chunks = layout.query_block, plan.kv_heads, plan.num_chunks
  x = x.reshape(kv_heads, num_chunks, b, chunk, rows // tq, tq, d)
  x = jnp.transpose(x, (2, 1, 3, 5, 0, 4, 6))  # [b, nc, chunk, tq, kvh, g, d]
  return x.reshape(b, num_chunks * chunk * tq, kv_heads * rows // tq, d)[:, :length]


def _head_slice(x, head, axis):
  """One kv head of `x` (kept as a size-1 axis) at a traced head index."""
  return jax.lax.dynamic_slice_in_dim(x, head, 1, axis=axis)


def _step_bias(bias, xs, plan):
  """The per-step `bias` argument of `_chunk_logits` (see there)."""
  if bias is None:
    return None
  if plan.typed:
    return _step_static_bias(bias, xs)
  return _head_slice(bias, xs['head'], 0)


def _split_segments(q_segment_ids, layout, plan):
  """`[b, n]` query segment ids -> `[kv_heads * num_chunks, b, chunk, tq]`, in
  the scan's (head-major) step order."""
  b = q_segment_ids.shape[0]
  tq = layout.query_block
  n_pad = plan.num_chunks * plan.chunk * tq
  ids = jnp.pad(q_segment_ids.astype(jnp.int32),
                ((0, 0), (0, n_pad - q_segment_ids.shape[1])))
  ids = jnp.swapaxes(ids.reshape(b, plan.num_chunks, plan.chunk, tq), 0, 1)
  return jnp.tile(ids, (plan.kv_heads, 1, 1, 1))


def _same_segment(q_ids_c, entry_ids, index):
  """`[b, chunk, tq, keys]`: query and gathered entry share a segment."""
  if q_ids_c is None:
    return None
  return q_ids_c[..., None] == jnp.take(entry_ids, index, axis=1)[:, :, None, :]


def _step_tables(xs, plan, windows):
  """This step's `(index, valid, lo, hi)`, each `[chunk, keys]`."""
  return _entry_tables(xs['span_start'], xs['span_len'], windows, plan.keys)


def _forward(q, k_flat, v_flat, entry_bias, bias, layout, plan, scale,
             max_distance, windows, segment_ids):
  q_chunks = _split_queries(q, layout, plan)
  k_t, v_t = _heads_major(k_flat), _heads_major(v_flat)
  q_ids, entry_ids = _segment_inputs(segment_ids, layout, plan)

  def step(_, inputs):
    q_c, q_ids_c, xs = inputs
    head = xs['head']
    tables = _step_tables(xs, plan, windows)
    k_g = _gather(_head_slice(k_t, head, 1), tables[0], plan)
    v_g = _gather(_head_slice(v_t, head, 1), tables[0], plan)
    logits = _chunk_logits(q_c, k_g, jnp.take(entry_bias, tables[0], axis=1),
                           _step_bias(bias, xs, plan), tables, xs['first_block'],
                           layout=layout, scale=scale,
                           max_distance=max_distance, typed=plan.typed,
                           same_segment=_same_segment(q_ids_c, entry_ids,
                                                      tables[0]))
    row_max = jnp.max(logits, axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    weights = jnp.exp(logits - row_max)
    total = jnp.sum(weights, axis=-1, keepdims=True)
    out = jnp.einsum('bkcrj,bkcjd->bkcrd', weights, v_g,
                     preferred_element_type=jnp.float32)
    norm = jnp.where(total > 0, total, 1.0)
    lse = jnp.where(total > 0, row_max + jnp.log(norm), jnp.inf)
    return None, (out / norm, lse)

  _, (out, lse) = jax.lax.scan(step, None, (q_chunks, q_ids, plan.xs))
  return out, lse


def _segment_inputs(segment_ids, layout, plan):
  """`(per-step query ids or None, entry ids or None)` of `segment_ids`."""
  if segment_ids is None:
    return None, None
  q_segment_ids, entry_segment_ids = segment_ids
  return (_split_segments(q_segment_ids, layout, plan),
          entry_segment_ids.astype(jnp.int32))


def _bias_inputs(table, bias_spec, plan, layout, windows):
  """`(bias, max_distance)`: the static bias of every block type if the plan is
  typed, else the bias by distance (None without a table)."""
  max_distance = 0 if table is None else bias_spec[1]
  if plan.unmasked and table is None:
    return None, 0
  if plan.typed:
    codes = _program_type_codes(plan, layout, windows)
    return _static_bias(table, bias_spec, plan, codes), max_distance
  if table is None:
    return None, 0
  return _bias_by_distance(table, bias_spec, plan.kv_heads), max_distance


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9))
def _attention(q, k_flat, v_flat, entry_bias, table, segment_ids, layout, plan,
               scale, bias_spec):
  """`(output, log-sum-exp [b, n, heads], -inf on rows with no key)`."""
  result, _ = _attention_fwd(q, k_flat, v_flat, entry_bias, table, segment_ids,
                             layout, plan, scale, bias_spec)
  return result


def _attention_fwd(q, k_flat, v_flat, entry_bias, table, segment_ids, layout,
                   plan, scale, bias_spec):
  windows = entry_windows(layout)
  bias, max_distance = _bias_inputs(table, bias_spec, plan, layout, windows)
  out, lse = _forward(q, k_flat, v_flat, entry_bias, bias, layout, plan, scale,
                      max_distance, windows, segment_ids)
  result = _merge_queries(out, q.shape[1], layout, plan).astype(v_flat.dtype)
  row_lse = _merge_queries(jnp.where(jnp.isinf(lse), -jnp.inf, lse), q.shape[1],
                           layout, plan)[..., 0]
  return (result, row_lse), (q, k_flat, v_flat, entry_bias, table, segment_ids,
                             out, lse)


def _attention_bwd(layout, plan, scale, bias_spec, residuals, cotangents):
  d_out, d_lse = cotangents
  q, k_flat, v_flat, entry_bias, table, segment_ids, out, lse = residuals
  q_ids, entry_ids = _segment_inputs(segment_ids, layout, plan)
  windows = entry_windows(layout)
  if table is None:
    bias, max_distance = _bias_inputs(None, None, plan, layout, windows)
    table_vjp = None
  else:
    bias, table_vjp = jax.vjp(
        lambda t: _bias_inputs(t, bias_spec, plan, layout, windows)[0], table)
    max_distance = bias_spec[1]
  q_chunks = _split_queries(q, layout, plan)
  do_chunks = _split_queries(d_out.astype(jnp.float32), layout, plan)
  # d lse / d logit = weight: a log-sum-exp cotangent shifts each row's delta.
  dlse_chunks = _split_queries(d_lse.astype(jnp.float32)[..., None], layout, plan)
  k_t, v_t = _heads_major(k_flat), _heads_major(v_flat)

  def step(carry, inputs):
    dk_t, dv_t, d_bias_acc = carry
    q_c, do_c, dlse_c, out_c, lse_c, q_ids_c, xs = inputs
    head = xs['head']
    tables = _step_tables(xs, plan, windows)
    index = tables[0]
    k_g = _gather(_head_slice(k_t, head, 1), index, plan)
    v_g = _gather(_head_slice(v_t, head, 1), index, plan)
    head_bias = _step_bias(bias, xs, plan)
    eb_g = jnp.take(entry_bias, index, axis=1)
    same_segment = _same_segment(q_ids_c, entry_ids, index)

    def logits_of(q_c, k_g, step_bias):
      return _chunk_logits(q_c, k_g, eb_g, step_bias, tables, xs['first_block'],
                           layout=layout, scale=scale,
                           max_distance=max_distance, typed=plan.typed,
                           same_segment=same_segment)

    logits, logits_vjp = jax.vjp(logits_of, q_c, k_g, head_bias)
    weights = jnp.exp(logits - lse_c)  # lse = +inf on empty rows -> 0
    dv_g = jnp.einsum('bkcrj,bkcrd->bkcjd', weights, do_c)
    dp = jnp.einsum('bkcrd,bkcjd->bkcrj', do_c, v_g,
                    preferred_element_type=jnp.float32)
    delta = jnp.sum(do_c * out_c, axis=-1, keepdims=True) - dlse_c
    ds = weights * (dp - delta)
    dq_c, dk_g, d_bias = logits_vjp(ds)
    if plan.whole_buffer:
      dk_t = dk_t.at[:, head].add(jnp.sum(dk_g, axis=(1, 2)).astype(jnp.float32))
      dv_t = dv_t.at[:, head].add(jnp.sum(dv_g, axis=(1, 2)))
    else:
      flat_index = index.reshape(-1)
      b, d = dk_g.shape[0], dk_g.shape[-1]
      dk_t = dk_t.at[:, head, flat_index].add(
          dk_g.reshape(b, -1, d).astype(jnp.float32))
      dv_t = dv_t.at[:, head, flat_index].add(dv_g.reshape(b, -1, d))
    if d_bias_acc is not None and plan.typed:
      # A sum per block type: the chunk's blocks may share a type.
      d_bias_acc = d_bias_acc.at[head, xs['block_type']].add(d_bias)
    elif d_bias_acc is not None:
      d_bias_acc = d_bias_acc.at[head].add(d_bias[0])
    return (dk_t, dv_t, d_bias_acc), dq_c

  init = (jnp.zeros(k_t.shape, jnp.float32), jnp.zeros(v_t.shape, jnp.float32),
          None if table is None else jnp.zeros(bias.shape, jnp.float32))
  (dk_t, dv_t, d_bias_acc), dq = jax.lax.scan(
      step, init, (q_chunks, do_chunks, dlse_chunks, out, lse, q_ids, plan.xs))
  dq = _merge_queries(dq, q.shape[1], layout, plan).astype(q.dtype)
  d_table = None
  if table is not None:
    d_table, = table_vjp(d_bias_acc)
    d_table = d_table.astype(table.dtype)
  # entry_bias depends only on masks and counts: it carries no gradient.
  return (dq, _heads_major(dk_t).astype(k_flat.dtype),
          _heads_major(dv_t).astype(v_flat.dtype), jnp.zeros_like(entry_bias),
          d_table, None)


_attention.defvjp(_attention_fwd, _attention_bwd)


@functools.lru_cache(maxsize=64)
def _plan_for(layout, chunk, kv_heads, max_distance):
  return _Plan(layout, chunk, kv_heads, max_distance)


def tree_level_attention_xla(q, k_flat, v_flat, entry_bias, layout: TreeLayout, *,
                             scale, position_bias=None, segment_ids=None,
                             chunk_bytes=DEFAULT_CHUNK_BYTES, return_lse=False):
  """Attention of `q [b, n, heads, d]` over the flat buffer of `layout`.

  `segment_ids`: `(q_segment_ids [b, n], entry_segment_ids [b, flat_size])`
  for packed examples (`pyramid.flat_segment_ids`): a query attends only the
  entries of its own segment. With `return_lse`, also each row's log-sum-exp
  `[b, n, heads]` (-inf where no key is allowed), differentiable: LongT5
  TGlobal joins it with its global scores.
  """
  batch, _, heads, _ = q.shape
  kv_heads = k_flat.shape[2]
  chunk = _choose_chunk(layout, batch, heads // kv_heads, chunk_bytes)
  table, bias_spec = None, None
  if position_bias is not None:
    table = position_bias.table
    bias_spec = (position_bias.num_buckets, position_bias.max_distance,
                 position_bias.bidirectional)
  plan = _plan_for(layout, chunk, kv_heads,
                   0 if position_bias is None else position_bias.max_distance)
  entry_bias = jax.lax.stop_gradient(entry_bias)
  result, lse = _attention(q, k_flat, v_flat, entry_bias, table, segment_ids,
                           layout, plan, float(scale), bias_spec)
  return (result, lse) if return_lse else result

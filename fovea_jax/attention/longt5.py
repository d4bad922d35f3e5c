"""LongT5 transient-global attention (Guo et al. 2022), blockwise.

Two pieces, matching Hugging Face `transformers`' LongT5 exactly (its
`modeling_longt5.py` is the oracle, tests/attention/test_longt5.py):
- `global_aggregates`: which global group every token belongs to and the sum of
  the hidden states of each group of `global_block_size` tokens (the layer then
  RMS-normalises the sums and projects them with its own K/V projections);
- `transient_global_attention`: local attention over blocks of `local_radius + 1`
  (each query sees keys with |i - j| <= local_radius) joined in one softmax with
  every global token, which carries a side relative-position bias over group
  positions.
Two implementations, equal to each other and to the dense oracle of the tests:
`transient_global_attention_reference` mirrors Hugging Face's blockwise form
(every query block against 3 local blocks plus the global tokens, one
concatenated softmax); `transient_global_attention` (the 'xla' path) runs the
local window on the tree path (tree_attention_xla.py), which returns each row's
log-sum-exp, scans the global scores a few groups of queries at a time with the
side bias built per group (a Toeplitz block, not a lookup per score), and joins
the two softmaxes through their log-sum-exps. On CPU at 4k tokens the second is the
faster by far: the blockwise form spends its time slicing windows, concatenating
scores and transposing them in the backward pass. Neither builds an
[length, length] array.

Causal variant (not in LongT5; for decoder-only LMs): query i sees local keys
i - local_radius <= j <= i and the global tokens of groups that end at or before i
(no orphan merging), with unidirectional buckets.
"""
from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np

from fovea_jax.attention import api
from fovea_jax.attention import common
from fovea_jax.attention import context_parallel
from fovea_jax.attention import local
from fovea_jax.attention import engines


def global_block_ids(key_mask, global_block_size, *, causal=False):
  """Group id of every token and validity of every global token.

  key_mask: [batch, length] bool. Returns `block_ids [batch, length]` int32 (-1 for
  padding) and `global_valid [batch, length // global_block_size]` bool.
  Bidirectional (LongT5): tokens after the last full group ("orphans") join the
  last full group, and global g is valid iff some token belongs to a group >= g.
  Causal: plain `i // global_block_size`; a group is valid when all its tokens are.
  """
  common.check_positive_int('global_block_size', global_block_size)
  batch, length = key_mask.shape
  key_mask = key_mask.astype(bool)
  num_globals = length // global_block_size
  position = jnp.arange(length)
  ids = jnp.where(key_mask, (position // global_block_size)[None], -1)
  if causal:
    grouped = key_mask[:, :num_globals * global_block_size].reshape(
        batch, num_globals, global_block_size)
    return ids.astype(jnp.int32), grouped.all(-1)
  block_ends = (position % global_block_size) == global_block_size - 1
  full_blocks = jnp.sum(block_ends[None] & (ids >= 0), axis=-1,
                        keepdims=True) - 1
  ids = jnp.where(ids < full_blocks, ids, full_blocks)
  global_valid = jnp.arange(num_globals)[None] <= jnp.max(ids, axis=-1,
                                                         keepdims=True)
  return ids.astype(jnp.int32), global_valid


@flax.struct.dataclass
class PackedGlobals:
  """The global groups of packed examples (`packed_global_block_ids`).

  segment_ids: `[batch, length]` the queries' segments; own_groups: `[batch,
  length]` the global slot a token's side bias is relative to; ends: `[batch,
  num_globals]` each slot's last token (causal: seen from there on);
  global_segment_ids: `[batch, num_globals]` each slot's segment (0: unused).
  """
  segment_ids: jax.Array
  own_groups: jax.Array
  ends: jax.Array
  global_segment_ids: jax.Array


def packed_global_block_ids(segment_ids, key_mask, global_block_size, *,
                            causal=False):
  """`(block_ids, global_valid, PackedGlobals)` of packed examples: every
  example's groups as `global_block_ids` makes them for the example alone
  (counted from its first token; bidirectional: its orphans join its last full
  group), numbered one after another along the row. There are at most
  `length // global_block_size` of them, the slots of an unpacked row.
  """
  common.check_positive_int('global_block_size', global_block_size)
  gbs = global_block_size
  batch, length = segment_ids.shape
  num_globals = length // gbs
  ids = segment_ids.astype(jnp.int32)
  real = key_mask.astype(bool) & (ids > 0)
  position = common.positions_in_segment(ids)
  from_end = jnp.flip(common.positions_in_segment(jnp.flip(ids, -1)), -1)
  example_len = position + from_end + 1
  full_groups = example_len // gbs
  group = position // gbs
  starts = real & (position % gbs == 0) & (group < full_groups)
  before = jnp.cumsum(starts, axis=-1) - starts          # full groups before t
  first_token = jnp.arange(length)[None] - position
  offset = jnp.take_along_axis(before, first_token, axis=-1)
  if causal:
    block_ids = jnp.where(real & (group < full_groups), offset + group, -1)
    own_groups = offset + group
  else:
    own = jnp.minimum(group, full_groups - 1)
    block_ids = jnp.where(real & (full_groups > 0), offset + own, -1)
    own_groups = block_ids
  slot = jnp.where(starts, before, num_globals)          # past the end: dropped
  scatter = jax.vmap(lambda s, x: jnp.zeros((num_globals,), jnp.int32).at[
      s].set(x, mode='drop'))
  global_segment_ids = scatter(slot, ids)
  ends = scatter(slot, jnp.arange(length, dtype=jnp.int32)[None].repeat(
      batch, 0) + gbs - 1)
  global_valid = global_segment_ids > 0
  return (block_ids.astype(jnp.int32), global_valid,
          PackedGlobals(ids, own_groups.astype(jnp.int32), ends,
                        global_segment_ids))


def global_aggregates(hidden, block_ids, num_globals):
  """Sum of `hidden [batch, length, d]` over each group: [batch, num_globals, d]
  (tokens of id -1 in none), added in float32.

  A scatter-add, so memory is linear in the length (a one-hot of tokens by
  groups would be float32 length^2 / global_block_size: 256 GiB at 1M tokens)."""
  ids = jnp.where(block_ids < 0, num_globals, block_ids)  # out of range: dropped
  sums = jax.vmap(lambda x, i: jax.ops.segment_sum(
      x, i, num_segments=num_globals))(hidden.astype(jnp.float32), ids)
  return sums.astype(hidden.dtype)


def _blocks(x, block, num_blocks):
  """[batch, length, ...] -> [batch, num_blocks, block, ...], zero padded."""
  x = common.pad_length(x, num_blocks * block)
  return x.reshape(x.shape[0], num_blocks, block, *x.shape[2:])


def _three_blocks(x):
  """[batch, nb, block, ...] -> [batch, nb, 3*block, ...]: previous, own, next."""
  widths = [(0, 0), (1, 1)] + [(0, 0)] * (x.ndim - 2)
  padded = jnp.pad(x, widths)
  nb = x.shape[1]
  return jnp.concatenate([padded[:, i:i + nb] for i in range(3)], axis=2)


def transient_global_attention(q, k, v, side_k, side_v, *, block_ids,
                               global_valid, local_radius, global_block_size,
                               causal=False, scale=1.0, key_mask=None,
                               position_bias=None, side_position_bias=None,
                               packed=None, implementation=None):
  """Local + global attention, one softmax per query (arguments as in
  `transient_global_attention_reference`). Outputs at masked query positions
  are unspecified (finite): no real position depends on them.
  """
  implementation = engines.resolve_implementation(implementation)
  options = dict(block_ids=block_ids, global_valid=global_valid,
                 local_radius=local_radius, global_block_size=global_block_size,
                 causal=causal, scale=scale, key_mask=key_mask,
                 position_bias=position_bias,
                 side_position_bias=side_position_bias, packed=packed)
  if implementation != 'xla':
    # The Pallas engines do not return log-sum-exps; the blockwise form is
    # plain XLA and runs anywhere.
    return transient_global_attention_reference(q, k, v, side_k, side_v,
                                                **options)
  groups = common.check_qkv(q, k, v, same_length=True)
  common.check_positive_int('local_radius', local_radius)
  key_mask = common.check_key_mask(key_mask, k)
  layout = local.local_layout(q.shape[1], window=local_radius, causal=causal)
  segment_ids = None if packed is None else packed.segment_ids
  local_out, local_lse = api.run_tree_layout(
      layout, q, k, v, scale=scale, key_mask=key_mask,
      position_bias=position_bias, implementation='xla', return_lse=True,
      q_segment_ids=segment_ids, kv_segment_ids=segment_ids)
  side_out, side_lse = _global_part(
      q, side_k, side_v, groups=groups, block_ids=block_ids,
      global_valid=global_valid, global_block_size=global_block_size,
      causal=causal, scale=scale, key_mask=key_mask,
      side_position_bias=side_position_bias, packed=packed)
  # One softmax over both parts: weigh each part's normalised output by its
  # share of the total mass exp(lse_local) + exp(lse_global).
  top = jnp.maximum(local_lse, side_lse)
  top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
  local_mass, side_mass = jnp.exp(local_lse - top), jnp.exp(side_lse - top)
  total = local_mass + side_mass
  total = jnp.where(total > 0, total, 1.0)
  out = (local_out.astype(jnp.float32) * (local_mass / total)[..., None] +
         side_out * (side_mass / total)[..., None])
  return out.astype(v.dtype)


def _group_toeplitz(by_rel, num_query_groups, num_globals):
  """`[h, Gq, G]` with `[o, g] = by_rel[:, g - o + Gq - 1]`, from `by_rel [h, R]`,
  R = Gq + G - 1, by reshapes and slices only (its gradient is then dense
  sums, not a scatter of Gq * G elements per head)."""
  heads = by_rel.shape[0]
  padded = jnp.pad(by_rel, ((0, 0), (0, 1)))  # one spare column for the skew
  width = padded.shape[1]
  tiled = jnp.broadcast_to(padded[:, None], (heads, num_query_groups, width))
  # Read with rows one shorter, row o starts o entries earlier: [o, c] holds
  # padded[c - o] for c >= o (always true below: c >= Gq - 1 >= o).
  skewed = tiled.reshape(heads, -1)[:, :num_query_groups * (width - 1)]
  skewed = skewed.reshape(heads, num_query_groups, width - 1)
  return skewed[:, :, num_query_groups - 1:num_query_groups - 1 + num_globals]


# Query rows per scan step of the global part (rounded to whole groups): one
# step's scores are `[batch, heads, rows, globals]`, so memory is linear in the
# length instead of length x globals (64k tokens, one layer's step: 19.9 GiB
# with the scores materialised).
GLOBAL_ROWS = 256


def _global_part(q, side_k, side_v, *, groups, block_ids, global_valid,
                 global_block_size, causal, scale, key_mask, side_position_bias,
                 packed=None):
  """Attention of every query to the global tokens alone.

  Returns the normalised output `[b, n, heads, d]` (float32, zero on rows with no
  allowed global) and the log-sum-exp `[b, n, heads]` (-inf there). Rows are
  scanned a few groups at a time (`GLOBAL_ROWS`); under a mesh with a sequence
  axis each device scans its own rows (`context_parallel.rows_attention`).
  """
  batch, length, heads, _ = q.shape
  num_globals = side_k.shape[1]
  if num_globals == 0:
    return (jnp.zeros(q.shape, jnp.float32),
            jnp.full((batch, length, heads), -jnp.inf, jnp.float32))
  rows = dict(valid=common.valid_keys(key_mask, batch, length, length))
  if packed is not None:
    rows.update(segment=packed.segment_ids.astype(jnp.int32),
                own=packed.own_groups.astype(jnp.int32))
  shared = dict(side_k=side_k, side_v=side_v, global_valid=global_valid,
                last_full=jnp.max(block_ids, axis=-1))
  if packed is not None:
    shared.update(global_segment=packed.global_segment_ids, ends=packed.ends)
  table = None if side_position_bias is None else side_position_bias.table
  attend = functools.partial(
      _global_rows, groups=groups, length=length, gbs=global_block_size,
      causal=causal, scale=scale, packed=packed is not None,
      bias_spec=None if table is None else (side_position_bias.num_buckets,
                                            side_position_bias.max_distance,
                                            side_position_bias.bidirectional))
  mesh = context_parallel.sequence_mesh()
  if mesh is None:
    return attend(q, rows, shared, table, first_row=0)
  return context_parallel.rows_attention(attend, q, rows, shared, table,
                                         mesh=mesh)


def _global_rows(q, rows, shared, table, *, first_row, groups, length, gbs,
                 causal, scale, packed, bias_spec):
  """`_global_part` of the rows `[first_row, first_row + q.shape[1])` of a
  sequence of `length` tokens: q `[b, rows, heads, d]`, `rows` its per-row
  arrays, `shared` the global tokens' (see `_global_part`)."""
  batch, num_rows, heads, head_dim = q.shape
  side_k, side_v = shared['side_k'], shared['side_v']
  kv_heads, num_globals = side_k.shape[2], side_k.shape[1]
  f32 = jnp.float32
  per_step = max(1, GLOBAL_ROWS // gbs)           # groups per scan step
  step_rows = per_step * gbs
  # Steps start on group boundaries: pad the rows before the first one.
  lead = first_row % gbs
  start = first_row - lead
  steps = -(-(lead + num_rows) // step_rows)
  padded = steps * step_rows
  pad = lambda x, fill=0: jnp.pad(
      x, [(0, 0), (lead, padded - lead - num_rows)] + [(0, 0)] * (x.ndim - 2),
      constant_values=fill)
  q_steps = jnp.moveaxis(pad(q.astype(f32)).reshape(
      batch, steps, step_rows, kv_heads, groups, head_dim), 1, 0)
  row_steps = {k: jnp.moveaxis(pad(v).reshape(batch, steps, step_rows), 1, 0)
               for k, v in rows.items()}
  s_k = jnp.swapaxes(side_k.astype(f32), 1, 2)  # [b, kvh, G, d]
  s_v = jnp.swapaxes(side_v.astype(f32), 1, 2)
  group = jnp.arange(num_globals)
  num_query_groups = -(-length // gbs)
  side_bias = None if table is None else common.RelativePositionBias(
      table, *bias_spec)
  if side_bias is not None and packed:
    by_rel = jnp.transpose(side_bias.bias(jnp.arange(-num_globals,
                                                     num_globals)))  # [h, 2G]
    toeplitz = _group_toeplitz(by_rel, num_globals + 1, num_globals)
  elif side_bias is not None:
    # Relative group distances -(Gq - 1) .. G - 1, with `per_step` spare
    # columns each side so that a step past the last group stays in range.
    by_rel = jnp.transpose(side_bias.bias(
        jnp.arange(-(num_query_groups - 1), num_globals)))          # [h, R]
    by_rel = jnp.pad(by_rel, ((0, 0), (per_step, per_step)))
    if not causal:
      last_full = jnp.maximum(shared['last_full'], 0)               # [b]
      orphan_bias = jnp.take(by_rel, group[None, :] - last_full[:, None] +
                             num_query_groups - 1 + per_step, axis=1)  # [h,b,G]

  def step(index, q_c, row_c):
    position = start + index * step_rows + jnp.arange(step_rows)      # [T]
    if packed:
      allowed = ((shared['global_segment'][:, None, :] ==
                  row_c['segment'][:, :, None]) &
                 shared['global_valid'][:, None, :])
      if causal:
        allowed &= shared['ends'][:, None, :] <= position[None, :, None]
    elif causal:
      seen = ((group + 1) * gbs - 1)[None, :] <= position[:, None]
      allowed = seen[None] & shared['global_valid'][:, None, :]
    else:  # Hugging Face: real tokens see valid globals, padding the others
      allowed = row_c['valid'][:, :, None] == shared['global_valid'][:, None, :]
    bias = jnp.where(allowed, 0.0, common.MASKED)[:, None]           # [b,1,T,G]
    if side_bias is not None and packed:
      own = jnp.clip(row_c['own'], 0, num_globals)
      per_row = jnp.swapaxes(jnp.take(toeplitz, own, axis=1), 0, 1)   # [b,h,T,G]
      bias = bias + per_row
    elif side_bias is not None:
      # The step's groups o0 .. o0 + per_step - 1, one Toeplitz block by
      # reshapes (its gradient is dense sums, not a scatter per score).
      first_group = (start + index * step_rows) // gbs
      window = jax.lax.dynamic_slice_in_dim(
          by_rel, num_query_groups - per_step - first_group + per_step,
          per_step + num_globals - 1, axis=1)
      block = _group_toeplitz(window, per_step, num_globals)        # [h,o,G]
      per_row = jnp.repeat(block, gbs, axis=1)[None]                 # [1,h,T,G]
      if not causal:
        orphan = (position // gbs)[None, :] > shared['last_full'][:, None]
        per_row = jnp.where(orphan[:, None, :, None],
                            jnp.swapaxes(orphan_bias, 0, 1)[:, :, None],
                            per_row)
      bias = bias + per_row
    bias = bias.reshape(bias.shape[0], -1, 1, step_rows, num_globals)
    if bias.shape[1] != 1:
      bias = bias.reshape(bias.shape[0], kv_heads, groups, step_rows,
                          num_globals)
    logits = jnp.einsum('btkgd,bksd->bkgts', q_c, s_k,
                        preferred_element_type=f32) * scale + bias
    row_max = jnp.max(logits, axis=-1, keepdims=True)
    row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max,
                                              0.0))
    weights = jnp.exp(logits - row_max)
    total = jnp.sum(weights, axis=-1, keepdims=True)
    norm = jnp.where(total > 0, total, 1.0)
    out = jnp.einsum('bkgts,bksd->btkgd', weights, s_v,
                     preferred_element_type=f32) / jnp.moveaxis(
                         norm, 3, 1)
    lse = jnp.where(total > 0, row_max + jnp.log(norm), -jnp.inf)[..., 0]
    return out, jnp.moveaxis(lse, 3, 1)                     # [b, T, kvh, g]

  # Recomputed in the backward pass: only each step's inputs are kept.
  body = jax.checkpoint(lambda _, xs: (None, step(*xs)))
  _, (out, lse) = jax.lax.scan(
      body, None, (jnp.arange(steps), q_steps, row_steps))
  out = jnp.moveaxis(out, 0, 1).reshape(batch, padded, heads, head_dim)
  lse = jnp.moveaxis(lse, 0, 1).reshape(batch, padded, heads)
  return out[:, lead:lead + num_rows], lse[:, lead:lead + num_rows]


def _packed_side_allowed(packed, global_valid, causal):
  """`[b, n, G]`: a query sees the valid global slots of its own example
  (causal: those whose group has ended at or before it)."""
  length = packed.segment_ids.shape[1]
  allowed = ((packed.global_segment_ids[:, None, :] ==
              packed.segment_ids[:, :, None]) & global_valid[:, None, :])
  if causal:
    allowed &= packed.ends[:, None, :] <= jnp.arange(length)[None, :, None]
  return allowed


def transient_global_attention_reference(
    q, k, v, side_k, side_v, *, block_ids, global_valid, local_radius,
    global_block_size, causal=False, scale=1.0, key_mask=None,
    position_bias=None, side_position_bias=None, packed=None):
  """Local + global attention, one softmax per query, in Hugging Face's
  blockwise form.

  q: [batch, length, heads, d]; k, v: [batch, length, kv_heads, d]; side_k,
  side_v: [batch, num_globals, kv_heads, d] (projected global tokens); block_ids,
  global_valid from `global_block_ids`. position_bias is the local T5 bias,
  side_position_bias the bias of `global position - own group id`. packed
  (`packed_global_block_ids`): examples packed in a row see only their own
  local keys and global slots, as each would alone.
  """
  groups = common.check_qkv(q, k, v, same_length=True)
  common.check_positive_int('local_radius', local_radius)
  key_mask = common.check_key_mask(key_mask, k)
  batch, length, heads, _ = q.shape
  num_globals = side_k.shape[1]
  block = local_radius + 1
  nb = -(-length // block)
  valid = common.valid_keys(key_mask, batch, length, length)

  q_b = _blocks(q.astype(jnp.float32), block, nb)        # [b, nb, blk, h, d]
  k_3 = _three_blocks(_blocks(k.astype(jnp.float32), block, nb))
  v_3 = _three_blocks(_blocks(v.astype(jnp.float32), block, nb))
  valid_3 = _three_blocks(_blocks(valid, block, nb))      # [b, nb, 3blk]
  k_3, v_3 = (jnp.repeat(x, groups, axis=3) for x in (k_3, v_3))
  local_logits = jnp.einsum('bnqhd,bnkhd->bnhqk', q_b, k_3) * scale

  # Relative position of key slot c to query slot r inside the 3-block window.
  rel = np.arange(3 * block)[None, :] - (np.arange(block) + block)[:, None]
  allowed = (np.abs(rel) <= local_radius) & ((rel <= 0) if causal else True)
  local_allowed = allowed[None, None] & valid_3[:, :, None, :]
  if packed is not None:
    ids = packed.segment_ids
    local_allowed &= (_blocks(ids, block, nb)[:, :, :, None] ==
                      _three_blocks(_blocks(ids, block, nb))[:, :, None, :])
  local_bias = jnp.where(local_allowed, 0.0,
                         common.MASKED)[:, :, None]       # [b, nb, 1, blk, 3blk]
  if position_bias is not None:
    local_bias = local_bias + jnp.transpose(
        position_bias.bias(jnp.asarray(rel)), (2, 0, 1))[None, None]

  side_k, side_v = (jnp.repeat(x.astype(jnp.float32), groups, axis=2)
                    for x in (side_k, side_v))
  side_logits = jnp.einsum('bnqhd,bghd->bnhqg', q_b, side_k) * scale
  position = jnp.arange(length)
  if packed is not None:
    own_group = packed.own_groups
    side_allowed = _packed_side_allowed(packed, global_valid, causal)
  elif causal:
    own_group = jnp.broadcast_to(position // global_block_size, (batch, length))
    seen = ((jnp.arange(num_globals) + 1) * global_block_size - 1)[None, None] <= (
        position[None, :, None])
    side_allowed = seen & global_valid[:, None, :]
  else:
    own_group = block_ids
    # A real token sees the valid globals (Hugging Face: mask == segment id).
    side_allowed = valid[:, :, None] == global_valid[:, None, :]
  side_bias = jnp.where(side_allowed, 0.0, common.MASKED)[..., None]  # [b, n, g, 1]
  if side_position_bias is not None:
    side_rel = jnp.arange(num_globals)[None, None, :] - own_group[:, :, None]
    side_bias = side_bias + side_position_bias.bias(side_rel)
  side_bias = jnp.transpose(_blocks(side_bias, block, nb), (0, 1, 4, 2, 3))

  logits = jnp.concatenate([local_logits + local_bias, side_logits + side_bias],
                           axis=-1)
  weights = common.safe_softmax_weights(logits)
  local_w, side_w = weights[..., :3 * block], weights[..., 3 * block:]
  out = (jnp.einsum('bnhqk,bnkhd->bnqhd', local_w, v_3) +
         jnp.einsum('bnhqg,bghd->bnqhd', side_w, side_v))
  out = out.reshape(batch, nb * block, heads, -1)[:, :length]
  return out.astype(v.dtype)


def transient_global_step(q, keys, values, side_k, side_v, *, index,
                          local_radius, global_block_size, position_bias=None,
                          side_position_bias=None, scale=1.0):
  """Causal TGlobal for one decoded query at `index` against cached keys.

  keys/values: [batch, max_len, kv_heads, d] (valid up to index; the window
  [index - local_radius, index] is read); side_k/v: the
  cached projected global tokens, of which groups ending at or before index are
  complete.
  """
  # Only the window is read: O(local_radius + globals) work per token.
  positions = index - local_radius + jnp.arange(local_radius + 1)
  safe = jnp.clip(positions, 0, keys.shape[1] - 1)
  keys, values = jnp.take(keys, safe, axis=1), jnp.take(values, safe, axis=1)
  heads = q.shape[2]
  local_allowed = (positions >= 0) & (positions <= index)
  local_bias = jnp.where(local_allowed, 0.0, common.MASKED)[None, :]  # [1, K]
  if position_bias is not None:
    local_bias = local_bias + jnp.transpose(position_bias.bias(positions - index))
  num_globals = side_k.shape[1]
  ends = (jnp.arange(num_globals) + 1) * global_block_size - 1
  side_bias = jnp.where(ends <= index, 0.0, common.MASKED)[None, :]  # [1, G]
  if side_position_bias is not None:
    side_rel = jnp.arange(num_globals) - index // global_block_size
    side_bias = side_bias + jnp.transpose(side_position_bias.bias(side_rel))
  bias = jnp.concatenate(
      [jnp.broadcast_to(local_bias, (heads, keys.shape[1])),
       jnp.broadcast_to(side_bias, (heads, num_globals))], axis=-1)
  bank_k = jnp.concatenate([keys, side_k.astype(keys.dtype)], axis=1)
  bank_v = jnp.concatenate([values, side_v.astype(values.dtype)], axis=1)
  return common.masked_dense_attention(q, bank_k, bank_v, bias[None, :, None, :],
                                       scale)

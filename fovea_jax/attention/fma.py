"""Fast Multipole Attention (Kang, Tran, De Sterck 2023), O(n log n) variant.

Queries stay at full resolution; keys and values far from a query are replaced by
coarse entries whose resolution halves with each level of the fast multipole
method's interaction lists (docs/attention.md#fast-multipole-attention). This module owns the level geometry,
the interaction lists, the dense oracle and the static TreeLayout.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax.numpy as jnp
import numpy as np

from fovea_jax.attention import common
from fovea_jax.attention import layout as layout_lib

DOWNSAMPLES = ('avg', 'grouped_conv')
# Window means: no parameters, any length (the scheme module's default too).
DEFAULT_DOWNSAMPLE = 'avg'


@dataclasses.dataclass(frozen=True)
class FmaLevel:
  """Coarse level l: groups of `group_size` tokens, `rank` entries of `window`."""
  level: int
  group_size: int
  window: int
  num_groups: int
  num_entries: int


def _check(fine_len, rank):
  common.check_positive_int('fine_len', fine_len)
  common.check_positive_int('rank', rank)
  if fine_len % rank:
    raise ValueError(f'rank ({rank}) must divide the group size fine_len '
                     f'({fine_len}) so every coarse entry averages whole tokens.')


def fma_padded_length(length, fine_len):
  """Length padded (with masked keys) up to `fine_len * 2^k`."""
  common.check_positive_int('fine_len', fine_len)
  blocks = max(1, -(-length // fine_len))
  return fine_len * (1 << (blocks - 1).bit_length())


def fma_levels(length, fine_len, rank):
  """The coarse levels 1..L for a sequence of `length` tokens."""
  _check(fine_len, rank)
  padded = fma_padded_length(length, fine_len)
  num_levels = max(int(math.log2(padded // fine_len)) - 1, 0)
  levels = []
  for level in range(1, num_levels + 1):
    group = fine_len * 2 ** (level - 1)
    levels.append(FmaLevel(level, group, group // rank, padded // group,
                           padded // group * rank))
  return tuple(levels)


def _far_groups(index, num_groups, causal):
  """Left (and right) interaction list of group `index` at one level."""
  left = [index - 3, index - 2] if index % 2 else [index - 2]
  right = [] if causal else ([index + 2] if index % 2 else [index + 2, index + 3])
  return [g for g in left + right if 0 <= g < num_groups]


def fma_interactions(fine_block, num_fine_blocks, levels, causal):
  """`[(level, first_group, last_group)]` far field plus near-field blocks."""
  near = list(range(max(fine_block - 1, 0),
                    min(fine_block + (0 if causal else 1), num_fine_blocks - 1) + 1))
  far = []
  for lvl in levels:
    groups = _far_groups(fine_block >> (lvl.level - 1), lvl.num_groups, causal)
    # Left groups are contiguous, right groups are contiguous.
    for side in ([g for g in groups if g < fine_block >> (lvl.level - 1)],
                 [g for g in groups if g > fine_block >> (lvl.level - 1)]):
      if side:
        far.append((lvl, min(side), max(side)))
  return near, far


def grouped_conv_levels(k, v, level_filters, levels, segment_ids=None,
                        entry_ids=None):
  """Learned coarse levels (`downsample='grouped_conv'`), start order.

  k, v: `[batch, padded, kv_heads, head_dim]`, zero at masked positions;
  level_filters `{level: (key_filter, value_filter)}`, each
  `[group_size, head_dim, rank]`: entry r of group g is
  `sum_u W[u, :, r] * x[g * group_size + u]` (depthwise, shared by heads).
  With `segment_ids [batch, padded]` (packed examples) and `entry_ids`, per
  level the `[batch, num_entries]` segment of every entry (the window's, as
  `pyramid.window_segment_ids` gives it), entry r takes only the group's
  tokens of its segment; a query of that segment thus reads the filter
  applied to its own segment's tokens.
  Returns `(k_levels, v_levels)`, one `[batch, num_entries, kv_heads,
  head_dim]` per level.
  """
  batch = k.shape[0]
  k_levels, v_levels = [], []
  for i, lvl in enumerate(levels):
    k_filter, v_filter = level_filters[lvl.level]
    member = None
    if segment_ids is not None:
      ids = segment_ids.reshape(batch, lvl.num_groups, lvl.group_size)
      own = entry_ids[i].reshape(batch, lvl.num_groups, -1)
      member = (ids[:, :, :, None] == own[:, :, None, :]).astype(k.dtype)
    for x, w, out in ((k, k_filter, k_levels), (v, v_filter, v_levels)):
      grouped = x.reshape(batch, lvl.num_groups, lvl.group_size, *x.shape[2:])
      w = w.astype(x.dtype)
      if member is None:
        coarse = jnp.einsum('bguhd,udr->bgrhd', grouped, w)
      else:
        coarse = jnp.einsum('bguhd,udr,bgur->bgrhd', grouped, w, member)
      out.append(coarse.reshape(batch, lvl.num_entries, *x.shape[2:]))
  return tuple(k_levels), tuple(v_levels)


def check_filters(level_filters, levels, head_dim, rank):
  """Validates `{level: (key_filter, value_filter)}` against the geometry."""
  for lvl in levels:
    if lvl.level not in level_filters:
      raise ValueError(f'level_filters has no filters for level {lvl.level} '
                       f'(levels {[l.level for l in levels]}).')
    want = (lvl.group_size, head_dim, rank)
    for w in level_filters[lvl.level]:
      if tuple(w.shape) != want:
        raise ValueError(f'level_filters[{lvl.level}] must have shape {want} '
                         f'(group_size, head_dim, rank), got {tuple(w.shape)}.')


def fma_attention_reference(q, k, v, *, fine_len, rank,
                            downsample=DEFAULT_DOWNSAMPLE, k_levels=None,
                            v_levels=None, level_filters=None, causal=False,
                            scale=None, key_mask=None, segment_ids=None):
  """Dense oracle: a key bank `[K; K_1; ...; K_L]` with the interaction mask.

  For `'avg'` the coarse entries are window means and carry ln(valid count); for
  learned levels they are the given arrays and carry ln(window). With 'avg' this
  equals dense softmax with far keys replaced by their window means.
  Learned levels come as k/v_levels or as the filters that make them
  (`level_filters`, see `grouped_conv_levels`).
  `segment_ids [batch, n]` (packed examples): every query has its own bank,
  raw keys and, per level, window means ('avg') or the learned filters
  (`level_filters`) over the tokens of its own segment; a coarse entry is
  visible if its window holds a valid token of that segment
  (docs/attention.md#packed-examples).
  """
  common.check_qkv(q, k, v, same_length=True)
  common.check_choice('downsample', downsample, DOWNSAMPLES)
  n = q.shape[1]
  levels = fma_levels(n, fine_len, rank)
  padded = fma_padded_length(n, fine_len)
  batch = q.shape[0]
  scale = common.default_scale(scale, q.shape[-1])
  valid = common.valid_keys(key_mask, batch, n, padded).astype(jnp.float32)
  keep = valid[:, :, None, None]
  k_pad = common.pad_length(k.astype(jnp.float32), padded) * keep
  v_pad = common.pad_length(v.astype(jnp.float32), padded) * keep
  if level_filters is not None:
    if k_levels is not None:
      raise ValueError('pass k_levels/v_levels or level_filters, not both.')
    check_filters(level_filters, levels, k.shape[-1], rank)
    if segment_ids is None:
      k_levels, v_levels = grouped_conv_levels(k_pad, v_pad, level_filters,
                                               levels)
  banks_k, banks_v, corrections = [k_pad], [v_pad], [jnp.where(valid > 0, 0.0,
                                                               common.MASKED)]
  for i, lvl in enumerate(levels):
    counts = valid.reshape(batch, -1, lvl.window).sum(-1)
    if k_levels is None:
      denom = jnp.maximum(counts, 1.0)[:, :, None, None]
      shape = (batch, lvl.num_entries, lvl.window) + k.shape[2:]
      banks_k.append(k_pad.reshape(shape).sum(2) / denom)
      banks_v.append(v_pad.reshape(shape).sum(2) / denom)
      corr = jnp.log(jnp.maximum(counts, 1.0))
    else:
      banks_k.append(k_levels[i].astype(jnp.float32))
      banks_v.append(v_levels[i].astype(jnp.float32))
      corr = jnp.full_like(counts, math.log(lvl.window))
    corrections.append(jnp.where(counts > 0, corr, common.MASKED))
  bank_k = jnp.concatenate(banks_k, axis=1)
  bank_v = jnp.concatenate(banks_v, axis=1)
  # Static [n, bank] interaction mask from the lists.
  offsets = np.cumsum([padded] + [lvl.num_entries for lvl in levels])
  allowed = np.zeros((n, offsets[-1]), bool)
  num_fine = padded // fine_len
  for t in range(n):
    near, far = fma_interactions(t // fine_len, num_fine, levels, causal)
    for b in near:
      allowed[t, b * fine_len:(b + 1) * fine_len] = True
    for lvl, g0, g1 in far:
      base = offsets[lvl.level - 1]
      allowed[t, base + g0 * rank:base + (g1 + 1) * rank] = True
  if causal:
    allowed[:, :padded] &= np.tril(np.ones((n, padded), bool))
  if segment_ids is not None:
    if k_levels is not None:
      raise ValueError('the FMA oracle computes learned levels of packed '
                       'examples per segment: pass level_filters, not '
                       'k_levels/v_levels.')
    return _segmented_bank_attention(q, k_pad, v_pad, valid, levels, allowed,
                                     segment_ids, scale, level_filters
                                     ).astype(v.dtype)
  bias = (jnp.where(allowed, 0.0, common.MASKED)[None, None] +
          jnp.concatenate(corrections, axis=1)[:, None, None, :])
  return common.masked_dense_attention(q, bank_k, bank_v, bias, scale).astype(v.dtype)


def _segmented_bank_attention(q, k_pad, v_pad, valid, levels, allowed,
                              segment_ids, scale, level_filters=None):
  """The oracle with packed examples: query t's bank holds its segment's raw
  keys and, per level, window means (or, with `level_filters`, the learned
  filters) over its segment's tokens."""
  batch, n = segment_ids.shape
  padded = k_pad.shape[1]
  ids = common.pad_length(segment_ids, padded)
  same = (ids[:, :n, None] == ids[:, None, :]).astype(jnp.float32)
  own = valid[:, None, :] * same                          # [b, t, token]
  member_rows = [np.eye(padded, dtype=np.float32)]        # the raw bank
  for lvl in levels:
    member_rows.append(np.kron(np.eye(lvl.num_entries, dtype=np.float32),
                               np.ones((1, lvl.window), np.float32)))
  member = jnp.asarray(np.concatenate(member_rows))       # [bank, token]
  weights = member[None, None] * own[:, :, None, :]       # [b, t, bank, token]
  counts = weights.sum(-1)                                # [b, t, bank]
  if level_filters is None:
    mean = weights / jnp.maximum(counts, 1.0)[..., None]
    bank_k = jnp.einsum('btej,bjhd->btehd', mean, k_pad)
    bank_v = jnp.einsum('btej,bjhd->btehd', mean, v_pad)
    correction = jnp.log(jnp.maximum(counts, 1.0))
  else:
    # Learned entry (g, r) of query t: sum_u W[u, :, r] x[g G + u] over the
    # group's tokens of t's segment.
    head_dim = k_pad.shape[-1]
    taps = []
    for part in (0, 1):
      rows = [jnp.asarray(np.eye(padded, dtype=np.float32))[:, :, None] *
              jnp.ones((head_dim,))]                      # [bank, token, d]
      for lvl in levels:
        w = level_filters[lvl.level][part].astype(jnp.float32)  # [u, d, r]
        block = jnp.transpose(w, (2, 0, 1))               # [r, u, d]
        eye = jnp.asarray(np.eye(lvl.num_groups, dtype=np.float32))
        rows.append(jnp.einsum('gf,rud->grfud', eye, block).reshape(
            lvl.num_entries, padded, head_dim))
      taps.append(jnp.concatenate(rows))
    bank_k = jnp.einsum('ejd,btj,bjhd->btehd', taps[0], own, k_pad)
    bank_v = jnp.einsum('ejd,btj,bjhd->btehd', taps[1], own, v_pad)
    windows = np.concatenate([[1.0] * padded] +
                             [[lvl.window] * lvl.num_entries for lvl in levels])
    correction = jnp.broadcast_to(jnp.log(jnp.asarray(windows, jnp.float32)),
                                  counts.shape)
  correction = correction.at[:, :, :padded].set(0.0)
  bias = jnp.where(jnp.asarray(allowed)[None] & (counts > 0), correction,
                   common.MASKED)                         # [b, t, bank]
  groups = q.shape[2] // k_pad.shape[2]
  bank_k, bank_v = (jnp.repeat(x, groups, axis=3) for x in (bank_k, bank_v))
  logits = jnp.einsum('bthd,btehd->bhte', q.astype(jnp.float32),
                      bank_k) * scale + bias[:, None]
  weights = common.safe_softmax_weights(logits)
  return jnp.einsum('bhte,btehd->bthd', weights, bank_v)


def fma_layout(length, *, fine_len, rank, downsample=DEFAULT_DOWNSAMPLE,
               causal=False, packed=False) -> layout_lib.TreeLayout:
  """The cached TreeLayout of FMA for one configuration.

  `packed` (bidirectional only): every coarse level also in a 'head' copy, which
  the groups after a query block read (see `PyramidSegment.side`).
  """
  _check(fine_len, rank)
  common.check_choice('downsample', downsample, DOWNSAMPLES)
  return _fma_layout(int(length), int(fine_len), int(rank), downsample,
                     bool(causal), bool(packed) and not causal)


@functools.lru_cache(maxsize=64)
def _fma_layout(length, fine_len, rank, downsample, causal, head_copies):
  levels = fma_levels(length, fine_len, rank)
  padded = fma_padded_length(length, fine_len)
  correction = 'log_count' if downsample == 'avg' else 'log_window'
  specs = [(1, 1, 0, padded, 'none')]
  specs += [(lvl.window, lvl.window, 0, lvl.num_entries, correction)
            for lvl in levels]
  if head_copies:
    specs += [spec + ('head',) for spec in specs[1:]]
  num_fine = padded // fine_len

  def spans(block, segments):
    near, far = fma_interactions(block, num_fine, levels, causal)
    out = [(segments[0].offset + near[0] * fine_len, len(near) * fine_len)]
    for lvl, g0, g1 in far:
      after = head_copies and g0 > block >> (lvl.level - 1)
      seg = segments[lvl.level + (len(levels) if after else 0)]
      out.append((seg.offset + g0 * rank, (g1 - g0 + 1) * rank))
    return out

  return layout_lib.make_layout(
      length=length, query_block=fine_len, token_length=padded, segment_specs=specs,
      spans_of_block=spans, causal=causal)


def check_levels(k_levels, v_levels, k, length, fine_len, rank):
  """Validates learned coarse levels against the geometry; returns them by segment."""
  levels = fma_levels(length, fine_len, rank)
  if (k_levels is None) != (v_levels is None):
    raise ValueError('pass both k_levels and v_levels, or neither.')
  if k_levels is None:
    return None
  if len(k_levels) != len(levels) or len(v_levels) != len(levels):
    raise ValueError(f'k_levels/v_levels need {len(levels)} levels for length '
                     f'{length} (fine_len {fine_len}), got {len(k_levels)} and '
                     f'{len(v_levels)}.')
  result = {}
  for lvl, kl, vl in zip(levels, k_levels, v_levels):
    want = (k.shape[0], lvl.num_entries) + k.shape[2:]
    if kl.shape != want or vl.shape != want:
      raise ValueError(f'k_levels/v_levels[{lvl.level - 1}] must have shape {want} '
                       f'(batch, groups*rank, kv_heads, head_dim), got {kl.shape} '
                       f'and {vl.shape}.')
    result[lvl.level] = (kl, vl)
  return result

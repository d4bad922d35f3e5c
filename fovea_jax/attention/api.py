"""The public attention functions: validate, pick an implementation, dispatch.

Every function takes `[batch, length, heads, head_dim]` arrays (k/v may have fewer
heads) and returns q's shape in v's dtype. `implementation` is None (best for the
backend), 'reference' (the dense oracle of docs/attention.md), 'xla' or
'pallas'.
"""
from __future__ import annotations

from fovea_jax.attention import common
from fovea_jax.attention import context_parallel
from fovea_jax.attention import dense
from fovea_jax.attention import fma
from fovea_jax.attention import fovea
from fovea_jax.attention import local
from fovea_jax.attention import pyramid
from fovea_jax.attention import engines


def _validate(q, k, v, key_mask, position_bias, *, same_length):
  common.check_qkv(q, k, v, same_length=same_length)
  key_mask = common.check_key_mask(key_mask, k)
  common.check_position_bias(position_bias, q.shape[2])
  return key_mask


def run_tree_layout(layout, q, k, v, *, scale, key_mask, position_bias,
                    implementation, coarse_levels=None, learned_levels=None,
                    return_lse=False, q_segment_ids=None, kv_segment_ids=None):
  """Builds the flat K/V buffer of `layout` and runs an engine over it.

  `learned_levels` `{segment index: (FmaLevel, (key_filter, value_filter))}`:
  those segments' entries are learned FMA filters of their groups
  (`fma.grouped_conv_levels`); `coarse_levels` `{segment index: (k_level,
  v_level)}` hands such entries in ready-made (unsharded only).
  `return_lse` (XLA engine only) also returns each row's log-sum-exp.
  `q_segment_ids`/`kv_segment_ids` `[batch, length]` (packed examples, both or
  neither): queries attend only keys, and pooled entries only average tokens,
  of their own segment (docs/attention.md#packed-examples).
  Under a mesh whose `sequence` axis has more than one device the sequence is
  split over it (`context_parallel`, docs/context_parallel.md).
  """
  batch, length = k.shape[:2]
  valid = common.valid_keys(key_mask, batch, length, length)
  segmented = check_segment_ids(q_segment_ids, kv_segment_ids, q, k)
  if return_lse and implementation != 'xla':
    raise ValueError(f'return_lse needs the xla engine, got {implementation!r}.')
  mesh = context_parallel.sequence_mesh()
  if mesh is not None and q.shape[1] == length and coarse_levels is None:
    segments = (dict(q_segment_ids=q_segment_ids,
                     kv_segment_ids=kv_segment_ids) if segmented else {})
    return context_parallel.tree_attention(
        layout, q, k, v, valid, scale=scale, position_bias=position_bias,
        implementation=implementation, mesh=mesh, return_lse=return_lse,
        learned_levels=learned_levels, **segments)
  if learned_levels:
    coarse_levels = _learned_levels(layout, k, v, valid, learned_levels,
                                    kv_segment_ids if segmented else None)
  k_flat, v_flat, entry_bias = pyramid.build_flat_kv(
      layout, k, v, valid, coarse_levels,
      segment_ids=kv_segment_ids if segmented else None)
  engine = engines.tree_engine(implementation)
  options = dict(return_lse=True) if return_lse else {}
  if segmented:
    options['segment_ids'] = (q_segment_ids,
                              pyramid.flat_segment_ids(layout, kv_segment_ids))
  return engine(q, k_flat, v_flat, entry_bias, layout,
                scale=common.default_scale(scale, q.shape[-1]),
                position_bias=position_bias, **options)


def _learned_levels(layout, k, v, valid, learned_levels, segment_ids):
  """`{layout segment: (k_level, v_level)}` from `learned_levels`' filters;
  with packed bidirectional layouts a level's 'head' copy is its own segment
  (`PyramidSegment.side`)."""
  padded = layout.token_length
  keep = common.pad_length(valid, padded)[:, :, None, None]
  k_pad = common.pad_length(k, padded) * keep.astype(k.dtype)
  v_pad = common.pad_length(v, padded) * keep.astype(v.dtype)
  ids = (None if segment_ids is None
         else common.pad_segment_ids(segment_ids, padded))
  coarse = {}
  for index, (level, filters) in learned_levels.items():
    seg = layout.segments[index]
    entry_ids = (None if ids is None else
                 (pyramid.window_segment_ids(seg, padded, ids),))
    k_lvl, v_lvl = fma.grouped_conv_levels(
        k_pad, v_pad, {level.level: filters}, (level,), ids, entry_ids)
    coarse[index] = (k_lvl[0], v_lvl[0])
  return coarse


def check_segment_ids(q_segment_ids, kv_segment_ids, q, k) -> bool:
  """True if packed; both or neither, each `[batch, length]` of q and k."""
  if q_segment_ids is None and kv_segment_ids is None:
    return False
  if q_segment_ids is None or kv_segment_ids is None:
    raise ValueError('pass both q_segment_ids and kv_segment_ids, or neither.')
  for name, ids, x in (('q_segment_ids', q_segment_ids, q),
                       ('kv_segment_ids', kv_segment_ids, k)):
    if tuple(ids.shape) != tuple(x.shape[:2]):
      raise ValueError(f'{name} must be [batch, length] = {tuple(x.shape[:2])}, '
                       f'got shape {tuple(ids.shape)}.')
  return True


# Dense attention with at least this many scores (queries x keys x heads) runs on
# the tree path under implementation 'xla'; smaller ones materialise the scores.
DENSE_SCAN_SCORES = 2**22


def dot_product_attention(q, k, v, *, scale=None, causal=False, key_mask=None,
                          position_bias=None, q_segment_ids=None,
                          kv_segment_ids=None, implementation=None):
  """Dense attention. 'xla' materializes the scores; 'pallas' is flash attention."""
  key_mask = _validate(q, k, v, key_mask, position_bias, same_length=False)
  implementation = engines.resolve_implementation(implementation)
  if causal and q.shape[1] != k.shape[1]:
    raise ValueError(f'causal=True needs q length {q.shape[1]} == k length '
                     f'{k.shape[1]}; for decoding pass key_mask instead.')
  segmented = check_segment_ids(q_segment_ids, kv_segment_ids, q, k)
  segments = dict(q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids)
  mesh = context_parallel.sequence_mesh()
  if mesh is not None and implementation != 'reference':
    if q.shape[1] == k.shape[1]:  # self-attention: the flash layout, split
      layout = dense.flash_layout(q.shape[1], causal=causal)
      return run_tree_layout(layout, q, k, v, scale=scale, key_mask=key_mask,
                             position_bias=position_bias,
                             implementation=implementation, **segments)
    if position_bias is not None:
      raise ValueError(
          'cross-attention split over the sequence axis takes no position '
          'bias (a query chunk does not know its offset); pass '
          'position_bias=None or set NUM_SEQUENCE_PARTITIONS = 1.')
    attend = lambda q, k, v, valid, q_ids, kv_ids: dot_product_attention(
        q, k, v, scale=scale, key_mask=valid, q_segment_ids=q_ids,
        kv_segment_ids=kv_ids, implementation=implementation)
    valid = common.valid_keys(key_mask, k.shape[0], k.shape[1], k.shape[1])
    return context_parallel.gather_attention(attend, q, k, v, valid, mesh=mesh,
                                             **segments)
  if implementation == 'pallas' and q.shape[1] == k.shape[1]:
    layout = dense.flash_layout(q.shape[1], causal=causal)
    return run_tree_layout(layout, q, k, v, scale=scale, key_mask=key_mask,
                           position_bias=position_bias, implementation='pallas',
                           **segments)
  if (implementation == 'xla' and
      q.shape[1] * k.shape[1] * q.shape[2] >= DENSE_SCAN_SCORES):
    # Flash-style on the tree path: one query block's scores at a time. The
    # decoder's cross-attention over 16k encoder tokens (256 queries, 4 heads)
    # took 678 ms of a 2.3 s LongT5-local training step with the scores
    # materialised, most of it moving them through memory.
    query_length = None if q.shape[1] == k.shape[1] else q.shape[1]
    layout = dense.flash_layout(k.shape[1], causal=causal,
                                query_length=query_length)
    return run_tree_layout(layout, q, k, v, scale=scale, key_mask=key_mask,
                           position_bias=position_bias, implementation='xla',
                           **segments)
  del segmented  # small products: the scores are materialised
  return dense.dot_product_attention_reference(
      q, k, v, scale=scale, causal=causal, key_mask=key_mask,
      position_bias=position_bias, q_segment_ids=q_segment_ids,
      kv_segment_ids=kv_segment_ids)


def fovea_attention(q, k, v, *, block_len, wing=fovea.DEFAULT_WING,
                    edge=fovea.DEFAULT_EDGE,
                    coarse_weight=fovea.DEFAULT_COARSE_WEIGHT, max_level=None,
                    causal=False, scale=None, key_mask=None,
                    position_bias=None, segment_ids=None, implementation=None):
  """Fovea attention (docs/attention.md#fovea); `segment_ids [batch, length]`
  for packed examples (docs/attention.md#packed-examples)."""
  key_mask = _validate(q, k, v, key_mask, position_bias, same_length=True)
  packed = check_segment_ids(segment_ids, segment_ids, q, k)
  options = dict(block_len=block_len, wing=wing, edge=edge,
                 coarse_weight=coarse_weight, max_level=max_level, causal=causal)
  implementation = engines.resolve_implementation(implementation)
  if implementation == 'reference':
    return fovea.fovea_attention_reference(q, k, v, scale=scale, key_mask=key_mask,
                                           position_bias=position_bias,
                                           segment_ids=segment_ids, **options)
  layout = fovea.fovea_layout(q.shape[1], packed=packed, **options)
  return run_tree_layout(layout, q, k, v, scale=scale, key_mask=key_mask,
                         position_bias=position_bias, implementation=implementation,
                         q_segment_ids=segment_ids, kv_segment_ids=segment_ids)


def fma_attention(q, k, v, *, fine_len, rank, downsample=fma.DEFAULT_DOWNSAMPLE,
                  k_levels=None, v_levels=None, level_filters=None,
                  causal=False, scale=None, key_mask=None, segment_ids=None,
                  implementation=None):
  """Fast Multipole Attention (docs/attention.md#fast-multipole-attention).

  `downsample='grouped_conv'` is learned: pass its filters (`level_filters
  {level: (key_filter, value_filter)}`, see `fma.grouped_conv_levels`) or,
  unpacked only, the coarse levels they made (k/v_levels).
  `segment_ids [batch, length]` for packed examples
  (docs/attention.md#packed-examples).
  """
  key_mask = _validate(q, k, v, key_mask, None, same_length=True)
  packed = check_segment_ids(segment_ids, segment_ids, q, k)
  common.check_choice('downsample', downsample, fma.DOWNSAMPLES)
  if packed and k_levels is not None:
    raise ValueError('FMA with packed examples computes learned levels per '
                     'segment: pass level_filters instead of k_levels/v_levels '
                     '(the FMA Flax layer does), or turn packing off.')
  learned = k_levels is not None or level_filters is not None
  if learned != (downsample == 'grouped_conv'):
    raise ValueError("downsample='grouped_conv' is learned: pass level_filters "
                     "or k_levels and v_levels (the FMA Flax layer passes its "
                     "filters); downsample='avg' takes none.")
  levels = fma.fma_levels(q.shape[1], fine_len, rank)
  if level_filters is not None:
    if k_levels is not None or v_levels is not None:
      raise ValueError('pass k_levels/v_levels or level_filters, not both.')
    fma.check_filters(level_filters, levels, k.shape[-1], rank)
  coarse = fma.check_levels(k_levels, v_levels, k, q.shape[1], fine_len, rank)
  implementation = engines.resolve_implementation(implementation)
  if implementation == 'reference':
    return fma.fma_attention_reference(
        q, k, v, fine_len=fine_len, rank=rank, downsample=downsample,
        k_levels=k_levels, v_levels=v_levels, level_filters=level_filters,
        causal=causal, scale=scale, key_mask=key_mask, segment_ids=segment_ids)
  layout = fma.fma_layout(q.shape[1], fine_len=fine_len, rank=rank,
                          downsample=downsample, causal=causal, packed=packed)
  learned = None
  if level_filters is not None:
    # Segment l is level l; packed bidirectional layouts repeat the levels as
    # 'head' copies in segments L + l.
    learned = {index: (levels[(index - 1) % len(levels)],
                       level_filters[levels[(index - 1) % len(levels)].level])
               for index in range(1, len(layout.segments))}
  return run_tree_layout(layout, q, k, v, scale=scale, key_mask=key_mask,
                         position_bias=None, implementation=implementation,
                         coarse_levels=coarse, learned_levels=learned,
                         q_segment_ids=segment_ids, kv_segment_ids=segment_ids)


def local_attention(q, k, v, *, window=None, block_len=None, causal=False,
                    scale=None, key_mask=None, position_bias=None,
                    segment_ids=None, implementation=None):
  """Sliding-window (`window`) or block-local (`block_len`) attention;
  `segment_ids [batch, length]` for packed examples."""
  key_mask = _validate(q, k, v, key_mask, position_bias, same_length=True)
  packed = check_segment_ids(segment_ids, segment_ids, q, k)
  implementation = engines.resolve_implementation(implementation)
  if implementation == 'reference':
    return local.local_attention_reference(
        q, k, v, window=window, block_len=block_len, causal=causal, scale=scale,
        key_mask=key_mask, position_bias=position_bias, segment_ids=segment_ids)
  layout = local.local_layout(q.shape[1], window=window, block_len=block_len,
                              causal=causal, packed=packed)
  if packed and block_len is not None:
    segment_ids = common.block_segment_ids(segment_ids, block_len)
  return run_tree_layout(layout, q, k, v, scale=scale, key_mask=key_mask,
                         position_bias=position_bias, implementation=implementation,
                         q_segment_ids=segment_ids, kv_segment_ids=segment_ids)


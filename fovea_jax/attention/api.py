"""The public attention functions: validate, pick an implementation, dispatch.

Every function takes `[batch, length, heads, head_dim]` arrays (k/v may have fewer
heads) and returns q's shape in v's dtype. `implementation` is None (best for the
backend), 'reference' (the dense oracle of docs/attention.md), 'xla' or
'pallas'.
"""
from __future__ import annotations

from fovea_jax.attention import common
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
                    implementation, coarse_levels=None, return_lse=False):
  """Builds the flat K/V buffer of `layout` and runs an engine over it.

  `return_lse` (XLA engine only) also returns each row's log-sum-exp.
  """
  batch, length = k.shape[:2]
  valid = common.valid_keys(key_mask, batch, length, length)
  k_flat, v_flat, entry_bias = pyramid.build_flat_kv(layout, k, v, valid,
                                                     coarse_levels)
  engine = engines.tree_engine(implementation)
  options = dict(return_lse=True) if return_lse else {}
  if return_lse and implementation != 'xla':
    raise ValueError(f'return_lse needs the xla engine, got {implementation!r}.')
  return engine(q, k_flat, v_flat, entry_bias, layout,
                scale=common.default_scale(scale, q.shape[-1]),
                position_bias=position_bias, **options)


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
  segmented = q_segment_ids is not None or kv_segment_ids is not None
  if implementation == 'pallas' and not segmented and q.shape[1] == k.shape[1]:
    layout = dense.flash_layout(q.shape[1], causal=causal)
    return run_tree_layout(layout, q, k, v, scale=scale, key_mask=key_mask,
                           position_bias=position_bias, implementation='pallas')
  if (implementation == 'xla' and not segmented and
      q.shape[1] * k.shape[1] * q.shape[2] >= DENSE_SCAN_SCORES):
    # Flash-style on the tree path: one query block's scores at a time. The
    # decoder's cross-attention over 16k encoder tokens (256 queries, 4 heads)
    # took 678 ms of a 2.3 s LongT5-local training step with the scores
    # materialised, most of it moving them through memory.
    query_length = None if q.shape[1] == k.shape[1] else q.shape[1]
    layout = dense.flash_layout(k.shape[1], causal=causal,
                                query_length=query_length)
    return run_tree_layout(layout, q, k, v, scale=scale, key_mask=key_mask,
                           position_bias=position_bias, implementation='xla')
  return dense.dot_product_attention_reference(
      q, k, v, scale=scale, causal=causal, key_mask=key_mask,
      position_bias=position_bias, q_segment_ids=q_segment_ids,
      kv_segment_ids=kv_segment_ids)


def fovea_attention(q, k, v, *, block_len, wing=fovea.DEFAULT_WING,
                    edge=fovea.DEFAULT_EDGE,
                    coarse_weight=fovea.DEFAULT_COARSE_WEIGHT, max_level=None,
                    causal=False, scale=None, key_mask=None,
                    position_bias=None, implementation=None):
  """Fovea attention (docs/attention.md#fovea)."""
  key_mask = _validate(q, k, v, key_mask, position_bias, same_length=True)
  options = dict(block_len=block_len, wing=wing, edge=edge,
                 coarse_weight=coarse_weight, max_level=max_level, causal=causal)
  implementation = engines.resolve_implementation(implementation)
  if implementation == 'reference':
    return fovea.fovea_attention_reference(q, k, v, scale=scale, key_mask=key_mask,
                                           position_bias=position_bias, **options)
  layout = fovea.fovea_layout(q.shape[1], **options)
  return run_tree_layout(layout, q, k, v, scale=scale, key_mask=key_mask,
                         position_bias=position_bias, implementation=implementation)


def fma_attention(q, k, v, *, fine_len, rank, downsample=fma.DEFAULT_DOWNSAMPLE,
                  k_levels=None, v_levels=None, causal=False, scale=None,
                  key_mask=None, implementation=None):
  """Fast Multipole Attention (docs/attention.md#fast-multipole-attention);
  learned levels via k/v_levels."""
  key_mask = _validate(q, k, v, key_mask, None, same_length=True)
  common.check_choice('downsample', downsample, fma.DOWNSAMPLES)
  coarse = fma.check_levels(k_levels, v_levels, k, q.shape[1], fine_len, rank)
  if (coarse is None) != (downsample == 'avg'):
    raise ValueError("downsample='grouped_conv' is learned: pass k_levels and "
                     "v_levels (the FMA Flax layer computes them); "
                     "downsample='avg' takes none.")
  implementation = engines.resolve_implementation(implementation)
  if implementation == 'reference':
    return fma.fma_attention_reference(
        q, k, v, fine_len=fine_len, rank=rank, downsample=downsample,
        k_levels=k_levels, v_levels=v_levels, causal=causal, scale=scale,
        key_mask=key_mask)
  layout = fma.fma_layout(q.shape[1], fine_len=fine_len, rank=rank,
                          downsample=downsample, causal=causal)
  return run_tree_layout(layout, q, k, v, scale=scale, key_mask=key_mask,
                         position_bias=None, implementation=implementation,
                         coarse_levels=coarse)


def local_attention(q, k, v, *, window=None, block_len=None, causal=False,
                    scale=None, key_mask=None, position_bias=None,
                    implementation=None):
  """Sliding-window (`window`) or block-local (`block_len`) attention."""
  key_mask = _validate(q, k, v, key_mask, position_bias, same_length=True)
  implementation = engines.resolve_implementation(implementation)
  if implementation == 'reference':
    return local.local_attention_reference(
        q, k, v, window=window, block_len=block_len, causal=causal, scale=scale,
        key_mask=key_mask, position_bias=position_bias)
  layout = local.local_layout(q.shape[1], window=window, block_len=block_len,
                              causal=causal)
  return run_tree_layout(layout, q, k, v, scale=scale, key_mask=key_mask,
                         position_bias=position_bias, implementation=implementation)


"""Local attention: sliding window (|i - j| <= window) or same-block attention.

The sparse layers of MASFormer and the local pattern of LongT5
(docs/attention.md, sections MASFormer and LongT5 local and transient-global).
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from fovea_jax.attention import common
from fovea_jax.attention import dense
from fovea_jax.attention import layout as layout_lib

# Query block of the sliding-window layout: larger blocks amortise overhead, smaller
# ones waste fewer keys (a block of T attends T + 2*window keys, the ideal is
# 2*window + 1 per query).
_MAX_SLIDING_QUERY_BLOCK = 128


def _check(window, block_len):
  if (window is None) == (block_len is None):
    raise ValueError('local attention needs exactly one of window (sliding, '
                     '|i - j| <= window) or block_len (same block only).')
  if window is not None:
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
      raise ValueError(f'window must be an integer >= 0, got {window!r}.')
  else:
    common.check_positive_int('block_len', block_len)


def local_allowed(q_len, *, window=None, block_len=None, causal=False):
  """The `[q_len, q_len]` boolean pattern (oracle only)."""
  i = np.arange(q_len)[:, None]
  j = np.arange(q_len)[None, :]
  if window is not None:
    allowed = np.abs(i - j) <= window
  else:
    allowed = i // block_len == j // block_len
  if causal:
    allowed &= j <= i
  return allowed


def local_attention_reference(q, k, v, *, window=None, block_len=None, causal=False,
                              scale=None, key_mask=None, position_bias=None,
                              segment_ids=None):
  """Dense oracle: the local pattern, and (packed examples) `segment_ids`'
  segments, over the dense scores."""
  _check(window, block_len)
  common.check_qkv(q, k, v, same_length=True)
  bias = dense.dense_logit_bias(q.shape[1], k.shape[1], key_mask=key_mask,
                                position_bias=position_bias,
                                q_segment_ids=segment_ids,
                                kv_segment_ids=segment_ids)
  allowed = jnp.asarray(local_allowed(q.shape[1], window=window,
                                      block_len=block_len, causal=causal))[None]
  if segment_ids is not None and block_len is not None:
    # Blocks count from each example's first token, as if it ran alone.
    block = common.positions_in_segment(segment_ids) // block_len
    j = np.arange(q.shape[1])
    allowed = ((block[:, :, None] == block[:, None, :]) &
               (j[None, :] <= j[:, None] if causal else True))
  bias = jnp.where(allowed[:, None], bias, common.MASKED)
  return common.masked_dense_attention(q, k, v, bias,
                                       common.default_scale(scale, q.shape[-1]))


def local_layout(length, *, window=None, block_len=None, causal=False,
                 packed=False):
  """The cached TreeLayout of local attention. `packed` (block-local only):
  blocks count from each example's start (`common.block_segment_ids`), so a
  query block also reads its neighbour blocks, where its examples' blocks
  may reach."""
  _check(window, block_len)
  return _local_layout(int(length), window, block_len, bool(causal),
                       bool(packed) and block_len is not None)


@functools.lru_cache(maxsize=64)
def _local_layout(length, window, block_len, causal, packed_blocks):
  if block_len is not None:
    query_block = block_len
  else:
    query_block = 8
    while query_block < min(window, _MAX_SLIDING_QUERY_BLOCK):
      query_block *= 2
  query_block = min(query_block, max(length, 1))
  num_blocks = -(-length // query_block)
  token_length = num_blocks * query_block

  def spans(block, segments):
    first, end = block * query_block, (block + 1) * query_block
    if window is not None:
      first = max(first - window, 0)
      end = end if causal else min(end + window, token_length)
    elif packed_blocks:
      first = max(first - query_block, 0)
      end = end if causal else min(end + query_block, token_length)
    return [(segments[0].offset + first, end - first)]

  return layout_lib.make_layout(
      length=length, query_block=query_block, token_length=token_length,
      segment_specs=[(1, 1, 0, token_length, 'none')], spans_of_block=spans,
      causal=causal, window=window)

"""Dense softmax attention: the baseline and the oracle every scheme reduces to."""
from __future__ import annotations

import functools

import jax.numpy as jnp

from fovea_jax.attention import common
from fovea_jax.attention import layout as layout_lib


def dense_logit_bias(q_len, kv_len, *, causal=False, key_mask=None,
                     position_bias=None, q_segment_ids=None, kv_segment_ids=None):
  """Additive `[batch|1, heads|1, q_len, kv_len]` bias: masks and T5 bias."""
  query_pos = jnp.arange(q_len)[:, None]
  key_pos = jnp.arange(kv_len)[None, :]
  allowed = jnp.ones((1, 1, q_len, kv_len), bool)
  if causal:
    allowed &= (key_pos <= query_pos)[None, None]
  if key_mask is not None:
    allowed &= key_mask[:, None, None, :]
  if q_segment_ids is not None or kv_segment_ids is not None:
    if q_segment_ids is None or kv_segment_ids is None:
      raise ValueError('pass both q_segment_ids and kv_segment_ids, or neither.')
    allowed &= (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :])[:, None]
  bias = jnp.where(allowed, 0.0, common.MASKED)
  if position_bias is not None:
    values = position_bias.bias(key_pos - query_pos)  # [q, k, heads]
    bias = bias + jnp.transpose(values, (2, 0, 1))[None]
  return bias


def dot_product_attention_reference(q, k, v, *, scale=None, causal=False,
                                    key_mask=None, position_bias=None,
                                    q_segment_ids=None, kv_segment_ids=None):
  """Dense oracle (docs/attention.md#dense): materializes the `[q_len, kv_len]` scores."""
  scale = common.default_scale(scale, q.shape[-1])
  bias = dense_logit_bias(q.shape[1], k.shape[1], causal=causal, key_mask=key_mask,
                          position_bias=position_bias, q_segment_ids=q_segment_ids,
                          kv_segment_ids=kv_segment_ids)
  return common.masked_dense_attention(q, k, v, bias, scale)


def flash_layout(length, *, causal, query_block=128, query_length=None):
  """Dense attention as a TreeLayout: every query block attends all raw keys.

  `query_length` (non-causal only): that many queries against `length` keys.
  """
  return _flash_layout(int(length), bool(causal), int(query_block),
                       None if query_length is None else int(query_length))


@functools.lru_cache(maxsize=64)
def _flash_layout(length, causal, query_block, query_length):
  query_block = min(query_block, length if query_length is None else
                    query_length)
  token_length = -(-length // query_block) * query_block

  def spans(block, segments):
    end = (block + 1) * query_block if causal else token_length
    return [(segments[0].offset, end)]

  return layout_lib.make_layout(
      length=length, query_block=query_block, token_length=token_length,
      segment_specs=[(1, 1, 0, token_length, 'none')], spans_of_block=spans,
      causal=causal, query_length=query_length)

"""Dense attention as a scheme module: full softmax, packing, causal, KV cache,
and T5X's prefix-LM mask (bidirectional among the inputs)."""
import gin
import flax.linen as nn
import jax.numpy as jnp

from fovea_jax import attention
from fovea_jax.attention import common as attention_common
from fovea_jax.attention import dense as dense_lib
from fovea_jax.layers.schemes import base


def _prefix_lm_attention(query, key, value, inputs: base.AttentionInputs):
  """Causal attention, except that prefix positions also see later prefix
  positions (T5X make_decoder_mask with decoder_causal_attention)."""
  length = query.shape[1]
  bias = dense_lib.dense_logit_bias(
      length, length, key_mask=inputs.key_mask, position_bias=inputs.position_bias,
      q_segment_ids=inputs.q_segment_ids, kv_segment_ids=inputs.kv_segment_ids)
  prefix = inputs.bidirectional_prefix.astype(bool)
  causal = jnp.arange(length)[None, :] <= jnp.arange(length)[:, None]
  allowed = causal[None] | (prefix[:, :, None] & prefix[:, None, :])
  bias = bias + jnp.where(allowed, 0.0, attention_common.MASKED)[:, None]
  return attention_common.masked_dense_attention(query, key, value, bias, 1.0)


@gin.configurable
class Dense(base.Scheme):
  """Dense attention; packed examples stay on the flash path (O(n) memory)."""
  scheme_name = 'dense'
  quadratic = True

  @nn.nowrap
  def attended_pairs(self, length, causal):
    """Every (query, key) pair, or those on and below the diagonal if causal:
    the count a materialised or flash-style pass defines (its masked tile
    corners are skipped or free)."""
    return length * (length + 1) / 2 if causal else float(length * length)

  @nn.compact
  def __call__(self, query, key, value, inputs: base.AttentionInputs):
    if inputs.decode:
      cache = base.kv_cache_step(self, key, value)
      if cache is not None:
        positions = jnp.arange(cache.key.shape[1])
        return base.step_attention(
            query, cache.key, cache.value,
            allowed=positions <= cache.index,
            relative_position=positions - cache.index,
            position_bias=inputs.position_bias)
    if inputs.bidirectional_prefix is not None:
      return _prefix_lm_attention(query, key, value, inputs)
    return attention.dot_product_attention(
        query, key, value, scale=1.0, causal=self.causal, key_mask=inputs.key_mask,
        position_bias=inputs.position_bias, q_segment_ids=inputs.q_segment_ids,
        kv_segment_ids=inputs.kv_segment_ids,
        implementation=inputs.implementation)

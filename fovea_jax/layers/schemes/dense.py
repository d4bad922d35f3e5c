"""Dense attention as a scheme module: full softmax, packing, causal, KV cache."""
import flax.linen as nn
import jax.numpy as jnp

from fovea_jax import attention
from fovea_jax.layers.schemes import base


class DenseScheme(nn.Module):
  """Dense attention; the only scheme that separates packed examples."""
  causal: bool = False

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
    return attention.dot_product_attention(
        query, key, value, scale=1.0, causal=self.causal, key_mask=inputs.key_mask,
        position_bias=inputs.position_bias, q_segment_ids=inputs.q_segment_ids,
        kv_segment_ids=inputs.kv_segment_ids,
        implementation=inputs.implementation)

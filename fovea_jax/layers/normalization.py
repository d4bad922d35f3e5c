"""T5 LayerNorm: RMS normalisation with a learned scale, no mean, no bias."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import partitioning as nn_partitioning

from fovea_jax.sharding import axis_names as ax


class RMSNorm(nn.Module):
  """x * rsqrt(mean(x^2) + eps) * scale, statistics in float32."""
  epsilon: float = 1e-6
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = jnp.asarray(x, jnp.float32)
    features = x.shape[-1]
    mean2 = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    y = jnp.asarray(x * jax.lax.rsqrt(mean2 + self.epsilon), self.dtype)
    scale = nn_partitioning.param_with_axes(
        'scale', nn.initializers.ones, (features,), self.param_dtype,
        axes=(ax.EMBED,))
    return y * jnp.asarray(scale, self.dtype)

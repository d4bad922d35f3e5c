"""T5's parameter initialisers (variance scaling with fan-in, as T5X uses)."""
import jax
import jax.numpy as jnp
import numpy as np


def t5_kernel_init(scale: float = 1.0, fan_in_axes=(0,)):
  """Normal(0, scale / fan_in) where fan_in is the product of `fan_in_axes`.

  T5X uses truncated-normal variance scaling with mode='fan_in'; fan-in is taken over
  the axes that are contracted so that multi-dimensional kernels ([embed, heads,
  head_dim] or [heads, head_dim, embed]) get the same spread as a flattened matrix.
  """
  def init(key, shape, dtype=jnp.float32):
    fan_in = int(np.prod([shape[a] for a in fan_in_axes]))
    std = np.sqrt(scale / fan_in) / 0.87962566103423978  # truncated-normal std fix
    return (jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32) *
            std).astype(dtype)
  return init


def embedding_init(key, shape, dtype=jnp.float32):
  """Normal(0, 1), T5X's default for the token embedding."""
  return jax.random.normal(key, shape, jnp.float32).astype(dtype)

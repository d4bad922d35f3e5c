"""Running sums of keys/values on a window grid: the decode-time pooled pyramid.

Fovea and FMA decoding never re-pool the prefix: each new token is added to the
one window that contains it on every level (O(levels) work per token), and a
query reads whole windows, which in the causal schemes are always complete.
"""
import jax
import jax.numpy as jnp
from flax.linen import partitioning as nn_partitioning

from fovea_jax.layers.schemes import base


def declare(module, name, num_windows):
  """`{name}_key_sums`/`{name}_value_sums` [batch, num_windows, kv_heads, d] f32."""
  cached_key = module.get_variable('cache', 'cached_key')
  shape = (cached_key.shape[0], num_windows) + cached_key.shape[2:]
  return tuple(
      nn_partitioning.variable_with_axes('cache', f'{name}_{part}_sums', jnp.zeros,
                                         shape, jnp.float32,
                                         axes=base.CACHE_KV_AXES)
      for part in ('key', 'value'))


def add(sums_var, slot, x):
  """sums[:, slot] += x ([batch, 1, kv_heads, d]); slot is traced."""
  old = jax.lax.dynamic_slice_in_dim(sums_var.value, slot, 1, axis=1)
  sums_var.value = jax.lax.dynamic_update_slice_in_dim(
      sums_var.value, old + x.astype(jnp.float32), slot, axis=1)


"""Token embedding with `attend` for tied logits (T5X's Embed)."""
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp
from flax.linen import partitioning as nn_partitioning

from fovea_jax.layers import initializers
from fovea_jax.sharding import axis_names as ax


class Embed(nn.Module):
  """Table [num_embeddings, features] with axes (vocab, embed)."""
  num_embeddings: int
  features: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  embedding_init: Callable = initializers.embedding_init
  # One-hot matmul instead of a gather: faster on TPU and sharding friendly.
  one_hot: bool = False

  def setup(self):
    self.embedding = nn_partitioning.param_with_axes(
        'embedding', self.embedding_init, (self.num_embeddings, self.features),
        self.param_dtype, axes=(ax.VOCAB, ax.EMBED))

  def __call__(self, inputs):
    if not jnp.issubdtype(inputs.dtype, jnp.integer):
      raise ValueError(f'Embed expects integer token ids, got {inputs.dtype}; '
                       'cast with .astype(jnp.int32) first.')
    table = jnp.asarray(self.embedding, self.dtype)
    if self.one_hot:
      return jnp.dot(_one_hot(inputs, self.num_embeddings, self.dtype), table)
    return jnp.take(table, inputs, axis=0)

  def attend(self, query):
    """Logits against the table: query [..., features] -> [..., num_embeddings]."""
    table = jnp.asarray(self.embedding, self.dtype)
    return jnp.dot(jnp.asarray(query, self.dtype), table.T)


def _one_hot(ids, depth, dtype):
  return (ids[..., None] == jnp.arange(depth)).astype(dtype)

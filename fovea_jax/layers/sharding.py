"""Sharding constraints on activations at block boundaries, by logical name."""
from flax.linen import partitioning as nn_partitioning

from fovea_jax.sharding import axis_names as ax

# [batch, length, embed] hidden states between blocks.
HIDDEN_AXES = (ax.BATCH, ax.LENGTH, ax.EMBED)
# [batch, length, mlp] inside the MLP.
MLP_AXES = (ax.BATCH, ax.LENGTH, ax.MLP)
# [batch, length, heads, kv] projected queries, keys and values.
HEADS_AXES = (ax.BATCH, ax.LENGTH, ax.HEADS, ax.KV)
# [batch, length, vocab] logits.
LOGITS_AXES = (ax.BATCH, ax.LENGTH, ax.VOCAB)


def constrain_activations(x, axes=HIDDEN_AXES):
  """`with_sharding_constraint` by logical names; a no-op outside a mesh."""
  return nn_partitioning.with_sharding_constraint(x, axes)

"""Where attention's batch and heads go when it runs per shard (`shard_map`).

Attention is independent per (batch, head): the Pallas kernels and the
sequence-parallel path (`attention.context_parallel`) run inside
`jax.shard_map` with batch and heads split over the mesh axes the logical axis
rules give `batch` and `heads`: those being traced under (a Partitioner's),
else the standard table, each where the sizes divide.
"""
from __future__ import annotations

import math

from flax.linen import partitioning as nn_partitioning

from fovea_jax.sharding import axis_names


def rules():
  """The logical axis rules in force: the active ones, else the standard table."""
  return tuple(nn_partitioning.get_axis_rules()) or axis_names.STANDARD_RULES


def split_axis(mesh, axis, *sizes):
  """`axis` (a mesh axis name or a tuple of them) if it can split dimensions of
  these sizes on `mesh`, else None (replicated)."""
  names = (axis,) if isinstance(axis, str) else tuple(axis or ())
  if not names or any(name not in mesh.axis_names or name in mesh.manual_axes
                      for name in names):
    return None
  parts = math.prod(mesh.shape[name] for name in names)
  if parts == 1 or any(size % parts for size in sizes):
    return None
  return axis


def batch_and_heads_axes(mesh, batch, heads, kv_heads):
  """(mesh axis of the batch, mesh axis of the heads), each None if replicated."""
  batch_axis, heads_axis = nn_partitioning.logical_to_mesh_axes(
      (axis_names.BATCH, axis_names.HEADS), rules())
  # kv heads split with q heads keeps every GQA group on one shard.
  return (split_axis(mesh, batch_axis, batch),
          split_axis(mesh, heads_axis, heads, kv_heads))

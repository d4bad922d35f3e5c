"""Runs the tree-attention kernels shard by shard under the current mesh.

A `pallas_call` is an opaque custom call to XLA's SPMD partitioner, which would
gather batch-sharded q/k/v onto every device and compute the whole batch there.
Attention is independent per (batch, head), so under a mesh (`jax.set_mesh`) the
kernels run inside `jax.shard_map`, batch and heads split over the mesh axes the
logical axis rules give `batch` and `heads`: those being traced under (a
`Partitioner`'s), else the standard table (`axis_names.STANDARD_RULES`: batch
over `data`, heads over `model`), each where the sizes divide. The length and
head dimensions are never split, whatever the rules say: every query needs all
its keys. Without a mesh, or inside a shard_map that already made these axes
manual, the call is unchanged.
"""
from __future__ import annotations

import math

from flax.linen import partitioning as nn_partitioning
import jax
from jax.sharding import PartitionSpec as P

from fovea_jax.sharding import axis_names


def rules():
  """The logical axis rules in force: the active ones, else the standard table."""
  return tuple(nn_partitioning.get_axis_rules()) or axis_names.STANDARD_RULES


def _split_axis(mesh, axis, *sizes):
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
  return (_split_axis(mesh, batch_axis, batch),
          _split_axis(mesh, heads_axis, heads, kv_heads))


def per_shard(attend, q, k_flat, v_flat, entry_bias, table, segment_ids=None):
  """`attend(q, k_flat, v_flat, entry_bias, table, segment_ids)` run per
  (batch, heads) shard; segment_ids (a pair of `[batch, ...]` arrays) split
  with the batch."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return attend(q, k_flat, v_flat, entry_bias, table, segment_ids)
  data, model = batch_and_heads_axes(mesh, q.shape[0], q.shape[2],
                                     k_flat.shape[2])
  if data is None and model is None:
    return attend(q, k_flat, v_flat, entry_bias, table, segment_ids)
  heads_spec = P(data, None, model, None)
  specs = [heads_spec, heads_spec, heads_spec, P(data, None)]
  args = [q, k_flat, v_flat, entry_bias]
  if table is not None:
    specs.append(P(None, model))
    args.append(table)
  if segment_ids is not None:
    specs += [P(data, None), P(data, None)]
    args += list(segment_ids)

  def local(*local_args):
    rest = list(local_args[4:])
    local_table = rest.pop(0) if table is not None else None
    local_segments = tuple(rest) if segment_ids is not None else None
    return attend(*local_args[:4], local_table, local_segments)

  return jax.shard_map(local, mesh=mesh, in_specs=tuple(specs),
                       out_specs=heads_spec, check_vma=False)(*args)

"""Runs the tree-attention kernels shard by shard under the current mesh.

A `pallas_call` is an opaque custom call to XLA's SPMD partitioner, which would
gather batch-sharded q/k/v onto every device and compute the whole batch there.
Attention is independent per (batch, head), so under a mesh (`jax.set_mesh`) the
kernels run inside `jax.shard_map`: batch split over the `data` axis and heads over
`model` (T5X's standard rules), each where the sizes divide. Without a mesh, or
inside a shard_map that already made these axes manual, the call is unchanged.
"""
from __future__ import annotations

import jax
from jax.sharding import PartitionSpec as P

from fovea_jax.sharding.axis_names import DATA
from fovea_jax.sharding.axis_names import MODEL


def _split_axis(mesh, axis, *sizes):
  """`axis` if it can split dimensions of these sizes, else None (replicated)."""
  if axis not in mesh.axis_names or axis in mesh.manual_axes:
    return None
  parts = mesh.shape[axis]
  if parts == 1 or any(size % parts for size in sizes):
    return None
  return axis


def per_shard(attend, q, k_flat, v_flat, entry_bias, table):
  """`attend(q, k_flat, v_flat, entry_bias, table)` run per (data, model) shard."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return attend(q, k_flat, v_flat, entry_bias, table)
  data = _split_axis(mesh, DATA, q.shape[0])
  # kv heads split with q heads keeps every GQA group on one shard.
  model = _split_axis(mesh, MODEL, q.shape[2], k_flat.shape[2])
  if data is None and model is None:
    return attend(q, k_flat, v_flat, entry_bias, table)
  heads_spec = P(data, None, model, None)
  specs = [heads_spec, heads_spec, heads_spec, P(data, None)]
  args = [q, k_flat, v_flat, entry_bias]
  if table is not None:
    specs.append(P(None, model))
    args.append(table)

  def local(*local_args):
    local_table = local_args[4] if table is not None else None
    return attend(*local_args[:4], local_table)

  return jax.shard_map(local, mesh=mesh, in_specs=tuple(specs),
                       out_specs=heads_spec, check_vma=False)(*args)

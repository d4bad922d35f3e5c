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

import jax
from jax.sharding import PartitionSpec as P

from fovea_jax.sharding import attention_axes
from fovea_jax.sharding import axis_names


def per_shard(attend, q, k_flat, v_flat, entry_bias, table, segment_ids=None):
  """`attend(q, k_flat, v_flat, entry_bias, table, segment_ids)` run per
  (batch, heads) shard; segment_ids (a pair of `[batch, ...]` arrays) split
  with the batch."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return attend(q, k_flat, v_flat, entry_bias, table, segment_ids)
  data, model = attention_axes.batch_and_heads_axes(
      mesh, q.shape[0], q.shape[2], k_flat.shape[2])
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

"""Params for evaluation, inference and export: restored onto the current mesh.

Shared by eval, infer and export: build the abstract params of `model` for the
given input shapes, map their logical axes onto the partitioner's mesh, and
restore them (params only, cast to `RestoreCheckpointConfig.dtype`) from the
configured checkpoint. Also places host batches that every process holds in
full onto the mesh.
"""
import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from fovea_jax.sharding import axis_names
from fovea_jax.training import checkpoints
from fovea_jax.training import train_state as train_state_lib


def params_layout(model: Any, partitioner: Any, input_shapes: Mapping,
                  input_types: Mapping):
  """(abstract params, their shardings) without allocating anything."""
  init = functools.partial(model.get_initial_variables,
                           input_shapes=dict(input_shapes),
                           input_types=dict(input_types))
  with partitioner.activate():
    boxed = jax.eval_shape(init, jax.random.PRNGKey(0))
  specs = train_state_lib.logical_param_specs(boxed)
  shardings = train_state_lib.param_shardings(specs, partitioner.mesh,
                                              partitioner.logical_axis_rules)
  return train_state_lib.unbox(boxed['params']), shardings, init


def restore_params(model: Any, partitioner: Any,
                   restore_cfg: checkpoints.RestoreCheckpointConfig,
                   input_shapes: Mapping, input_types: Mapping,
                   seed: int = 0) -> tuple[Any, int]:
  """(params on the mesh, checkpoint step). Random init only if the config
  allows fallback_to_scratch and no checkpoint exists (step 0)."""
  abstract, shardings, init = params_layout(model, partitioner, input_shapes,
                                            input_types)
  rep = train_state_lib.replicated(partitioner.mesh)
  state, meta = checkpoints.restore(
      _params_only(restore_cfg),
      train_state_lib.TrainState(step=jax.ShapeDtypeStruct((), jnp.int32),
                                 params=abstract, opt_state=None),
      train_state_lib.TrainState(step=rep, params=shardings, opt_state=None))
  if state is not None:
    return state.params, int(meta.get('step', 0))
  with partitioner.activate():
    params = jax.jit(lambda r: train_state_lib.unbox(init(r)['params']),
                     out_shardings=shardings)(jax.random.PRNGKey(seed))
  return params, 0


def _params_only(cfg: checkpoints.RestoreCheckpointConfig):
  return dataclasses.replace(cfg, strict=False)


def _split_count(sharding: jax.sharding.NamedSharding) -> int:
  return int(np.prod([sharding.mesh.shape[a] for a in jax.tree.leaves(
      sharding.spec[0])])) if sharding.spec and sharding.spec[0] else 1


def batch_on_mesh(batch: Mapping[str, np.ndarray], partitioner: Any) -> dict:
  """A batch every process holds in full -> global arrays split over `data`.

  A batch that does not divide over the data axis (a small eval batch on many
  devices) is replicated instead: slower, same results.
  """
  out = {}
  for name, value in batch.items():
    value = np.asarray(value)
    spec = (axis_names.BATCH,) + (None,) * (value.ndim - 1)
    sharding = train_state_lib.param_shardings(
        jax.sharding.PartitionSpec(*spec), partitioner.mesh,
        partitioner.logical_axis_rules)
    if value.shape[0] % _split_count(sharding):
      sharding = train_state_lib.replicated(partitioner.mesh)
    out[name] = jax.make_array_from_callback(value.shape, sharding,
                                             lambda index, v=value: v[index])
  return out

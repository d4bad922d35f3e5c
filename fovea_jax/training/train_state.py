"""The training state and where each of its leaves lives on the mesh.

`TrainState` holds step, params and optimizer state. Shardings come from the
logical axis names the network recorded for every parameter (the `params_axes`
collection of `param_with_axes`, or `LogicallyPartitioned` boxes) mapped through
the logical rules; optimizer-state leaves shaped like their parameter share its
sharding, smaller ones (Adafactor's factored row/column statistics, counters) are
replicated. Nothing here initialises arrays: callers get abstract shapes with
shardings and jit the initialisation or the restore onto them.
"""
from typing import Any, Callable, Sequence

import flax
import flax.linen as nn
from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: PyTree
  opt_state: PyTree


def logical_param_specs(variables: PyTree) -> PyTree:
  """PartitionSpecs of logical axis names, one per leaf of variables['params']."""
  if 'params_axes' in variables:
    specs = nn_partitioning.get_axis_names(variables['params_axes'])
    return _match_params(variables['params'], specs)
  return nn.get_partition_spec(variables['params'])


def _match_params(params: PyTree, specs: PyTree) -> PyTree:
  """Checks every parameter has an axes entry; names the first one missing."""
  flat_params = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  flat_specs = flax.traverse_util.flatten_dict(flax.core.unfreeze(specs))
  missing = [k for k in flat_params if k not in flat_specs]
  if missing:
    raise ValueError(
        f'Parameter {"/".join(missing[0])} has no logical axes in params_axes; '
        'create it with param_with_axes(..., axes=...) so it can be sharded.')
  return flax.traverse_util.unflatten_dict({k: flat_specs[k] for k in flat_params})


def unbox(tree: PyTree) -> PyTree:
  """Plain dicts without LogicallyPartitioned boxes (checkpoints need neither)."""
  return flax.core.unfreeze(nn.meta.unbox(tree))


def param_shardings(specs: PyTree, mesh: jax.sharding.Mesh,
                    rules: Sequence[tuple[str, Any]]) -> PyTree:
  return nn.logical_to_mesh_sharding(specs, mesh, list(rules))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def opt_state_shardings(optimizer: optax.GradientTransformation,
                        abstract_opt_state: PyTree, abstract_params: PyTree,
                        params_sharding: PyTree,
                        mesh: jax.sharding.Mesh) -> PyTree:
  """Param-shaped optimizer leaves follow their parameter; the rest replicate."""
  rep = replicated(mesh)

  def per_leaf(leaf, param, sharding):
    if hasattr(leaf, 'shape') and leaf.shape == param.shape:
      return sharding
    return rep

  state = optax.tree_map_params(
      optimizer, per_leaf, abstract_opt_state, abstract_params, params_sharding,
      transform_non_params=lambda _: rep)
  # Some leaves (empty states, masked nodes) come back as non-sharding objects.
  return jax.tree.map(
      lambda s: s if isinstance(s, jax.sharding.Sharding) else rep, state,
      is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))


def with_shardings(abstract: PyTree, shardings: PyTree) -> PyTree:
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract, shardings)


def init_state(params: PyTree, optimizer: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params))


def state_layout(init_variables_fn: Callable[[jax.Array], PyTree],
                 optimizer: optax.GradientTransformation,
                 mesh: jax.sharding.Mesh,
                 rules: Sequence[tuple[str, Any]]):
  """Abstract TrainState and its shardings, without allocating anything.

  Returns (abstract_state, state_shardings, logical_specs of params).
  """
  rng = jax.random.PRNGKey(0)
  boxed = jax.eval_shape(init_variables_fn, rng)
  specs = logical_param_specs(boxed)
  abstract_params = unbox(boxed['params'])
  p_shardings = param_shardings(specs, mesh, rules)
  abstract = jax.eval_shape(lambda p: init_state(p, optimizer), abstract_params)
  o_shardings = opt_state_shardings(optimizer, abstract.opt_state,
                                    abstract_params, p_shardings, mesh)
  shardings = TrainState(step=replicated(mesh), params=p_shardings,
                         opt_state=o_shardings)
  return abstract, shardings, specs

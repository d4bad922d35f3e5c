"""The `(data, [sequence,] model)` device mesh and where every array lives on it.

`Partitioner` plays the part of T5X's `PjitPartitioner`: it builds the mesh from
`num_partitions` (or an explicit `mesh_shape`), turns the logical axis names that
params carry (the `params_axes` collection written by
`flax.linen.partitioning.param_with_axes`) into `PartitionSpec`s through one rules
table, and places params, optimizer state and batches on the mesh. Every shape is
checked against the mesh first, so a mismatch fails with a message that names the
array, the dimension and the fix instead of an XLA error deep inside `jit`.

This module knows nothing about any particular network or optimizer.
"""
import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import gin
import jax
import numpy as np
from flax.core import frozen_dict
from flax.linen import partitioning as nn_partitioning
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from fovea_jax.sharding import axis_names

LogicalRules = Sequence[tuple[str, str | None]]


def _path_name(path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)


@gin.configurable
class Partitioner:
  """Builds the `(data, model)` mesh and shards params, optimizer state, batches.

  With `num_sequence_partitions > 1` the mesh is `(data, sequence, model)`: one
  sequence is split over the `sequence` axis (the rules map the logical
  `length` axis there), params are not; attention runs sequence-parallel
  (`fovea_jax.attention.context_parallel`, docs/context_parallel.md).

  Attributes:
    mesh: the `jax.sharding.Mesh` with axes `('data', 'model')` or `('data',
      'sequence', 'model')`, Auto axis types (Explicit axes break Linen code on
      this jax version).
    logical_axis_rules: logical name -> mesh axis pairs, in precedence order.
  """

  def __init__(self,
               num_partitions: int | None = None,
               mesh_shape: Sequence[int] | None = None,
               model_parallel_submesh: Sequence[int] | None = None,
               logical_axis_rules: LogicalRules | None = None,
               devices: Sequence[jax.Device] | None = None,
               num_sequence_partitions: int = 1):
    """Chooses the mesh.

    Args:
      num_partitions: size of the `model` axis; the `data` axis takes the rest of
        the devices. Default 1 (pure data parallelism).
      mesh_shape: explicit `(data, model)` sizes, or `(data, sequence, model)`;
        their product must equal the number of devices. Exclusive with
        `num_partitions`.
      model_parallel_submesh: T5X's spelling of the model-parallel block; only
        its product (the `model` axis size) matters on a flat device list.
      logical_axis_rules: defaults to `axis_names.STANDARD_RULES`.
      devices: defaults to `jax.devices()`.
      num_sequence_partitions: size of the `sequence` axis (1: no such axis);
        the `data` axis takes what model and sequence leave.
    """
    devices = list(jax.devices() if devices is None else devices)
    chosen = [x is not None for x in (num_partitions, mesh_shape,
                                      model_parallel_submesh)]
    if sum(chosen) > 1:
      raise ValueError(
          'Give at most one of num_partitions, mesh_shape and '
          f'model_parallel_submesh (got num_partitions={num_partitions}, '
          f'mesh_shape={mesh_shape}, '
          f'model_parallel_submesh={model_parallel_submesh}).')
    if model_parallel_submesh is not None:
      num_partitions = math.prod(model_parallel_submesh)
    sequence = int(num_sequence_partitions)
    if sequence < 1:
      raise ValueError(f'num_sequence_partitions must be >= 1, got {sequence}.')
    if mesh_shape is None:
      num_partitions = 1 if num_partitions is None else num_partitions
      if num_partitions < 1 or len(devices) % (num_partitions * sequence):
        raise ValueError(
            f'num_partitions={num_partitions} x num_sequence_partitions='
            f'{sequence} does not divide the {len(devices)} available devices: '
            f'choose sizes whose product divides {len(devices)}.')
      mesh_shape = (len(devices) // (num_partitions * sequence), sequence,
                    num_partitions)
    mesh_shape = tuple(int(s) for s in mesh_shape)
    if len(mesh_shape) == 2:
      mesh_shape = (mesh_shape[0], sequence, mesh_shape[1])
    elif len(mesh_shape) == 3 and sequence not in (1, mesh_shape[1]):
      raise ValueError(
          f'mesh_shape {mesh_shape} has a sequence axis of {mesh_shape[1]} but '
          f'num_sequence_partitions={sequence}: give one of them.')
    if len(mesh_shape) != 3 or min(mesh_shape) < 1:
      raise ValueError(
          f'mesh_shape must be two positive sizes (data, model) or three '
          f'(data, sequence, model), got {mesh_shape}.')
    if math.prod(mesh_shape) != len(devices):
      raise ValueError(
          f'mesh_shape {mesh_shape} needs {math.prod(mesh_shape)} devices but '
          f'{len(devices)} are available: make the sizes multiply to '
          f'{len(devices)} (or pass num_partitions and let the data axis take '
          'the rest).')
    rules = tuple(tuple(r) for r in (axis_names.STANDARD_RULES
                                     if logical_axis_rules is None else
                                     logical_axis_rules))
    if mesh_shape[1] > 1:
      names = (axis_names.DATA, axis_names.SEQUENCE, axis_names.MODEL)
      rules = axis_names.SEQUENCE_RULES + tuple(
          r for r in rules if r[0] != axis_names.LENGTH)
    else:
      names = (axis_names.DATA, axis_names.MODEL)
      mesh_shape = (mesh_shape[0], mesh_shape[2])
    self.mesh = Mesh(
        np.asarray(devices, dtype=object).reshape(mesh_shape), names,
        axis_types=(AxisType.Auto,) * len(names))
    self.logical_axis_rules = rules

  def __repr__(self):
    return (f'Partitioner(mesh={dict(self.mesh.shape)}, '
            f'rules={self.logical_axis_rules})')

  # ---------------------------------------------------------------- contexts

  @contextlib.contextmanager
  def activate(self):
    """Sets the mesh and the rules for tracing: activation constraints
    (`with_sharding_constraint` on logical names) only take effect inside."""
    with jax.set_mesh(self.mesh), nn_partitioning.axis_rules(
        self.logical_axis_rules):
      yield

  def partition(self, fn: Callable, in_shardings=None, out_shardings=None,
                static_argnums=(), donate_argnums=()) -> 'PartitionedFunction':
    """`jax.jit` of `fn` that traces and runs under this mesh and rules."""
    return PartitionedFunction(
        self, jax.jit(fn, in_shardings=in_shardings,
                      out_shardings=out_shardings,
                      static_argnums=static_argnums,
                      donate_argnums=donate_argnums))

  # ------------------------------------------------------ logical -> mesh

  def logical_to_mesh_axes(self, logical_axes) -> PartitionSpec:
    """One array's logical names (tuple or PartitionSpec) -> mesh PartitionSpec.

    Names without a rule are replicated, as in T5X."""
    spec = nn_partitioning.logical_to_mesh_axes(tuple(logical_axes),
                                                self.logical_axis_rules)
    return PartitionSpec(*spec)

  def params_specs(self, variables) -> Any:
    """Logical axis names of the params -> mesh PartitionSpecs mirroring them.

    Accepts the `params_axes` collection as written by `param_with_axes`
    (leaves `AxisMetadata`, keys `<name>_axes`), or a whole variables dict
    holding it, or one whose `params` are `nn.LogicallyPartitioned` boxes.
    """
    variables = frozen_dict.unfreeze(variables)
    if 'params_axes' in variables:
      logical = nn_partitioning.get_axis_names(variables['params_axes'])
    elif 'params' in variables:
      logical = nn.get_partition_spec(variables['params'])
    else:
      logical = nn_partitioning.get_axis_names(variables)
    return jax.tree.map(self.logical_to_mesh_axes, frozen_dict.unfreeze(logical),
                        is_leaf=lambda x: isinstance(x, PartitionSpec))

  def replicated_specs(self, tree) -> Any:
    """`PartitionSpec()` for every leaf of `tree` (scalars, step counters)."""
    return jax.tree.map(lambda _: PartitionSpec(), tree)

  def sharding(self, spec: PartitionSpec) -> NamedSharding:
    return NamedSharding(self.mesh, spec)

  def replicated(self) -> NamedSharding:
    """Every device holds the whole array (metrics, scalars)."""
    return self.sharding(PartitionSpec())

  def shardings(self, specs) -> Any:
    """A tree of PartitionSpecs -> the same tree of NamedShardings."""
    return jax.tree.map(self.sharding, specs,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))

  # ------------------------------------------------------------- checking

  def check_fits(self, shapes, specs, what: str = 'param') -> None:
    """Raises ValueError naming the first array whose shape the mesh cannot split.

    Args:
      shapes: tree of arrays or ShapeDtypeStructs.
      specs: the same tree with mesh PartitionSpecs as leaves.
      what: the kind of array, for the message ('param', 'batch feature'...).
    """
    flat_specs = _flatten_specs(specs)
    flat_shapes = _flatten(shapes)
    missing = sorted(set(flat_shapes) - set(flat_specs))
    if missing:
      raise ValueError(
          f'No partition spec for {what} {"/".join(missing[0])}: every param '
          'must be created with param_with_axes so that it has logical axes.')
    for key, leaf in flat_shapes.items():
      spec = flat_specs[key]
      shape = np.shape(leaf)
      if len(spec) > len(shape):
        raise ValueError(
            f'{what} {"/".join(key)} has shape {shape} but partition spec '
            f'{spec} names {len(spec)} dims: its logical axes are wrong.')
      for dim, mesh_axes in enumerate(spec):
        if mesh_axes is None:
          continue
        names = mesh_axes if isinstance(mesh_axes, tuple) else (mesh_axes,)
        size = math.prod(self.mesh.shape[n] for n in names)
        if shape[dim] % size:
          raise ValueError(
              f'{what} {"/".join(key)}: dim {dim} has size {shape[dim]}, which '
              f'does not divide over mesh axis {mesh_axes!r} of size {size} '
              f'(mesh {dict(self.mesh.shape)}). Fix: make that size a multiple '
              f'of {size}, choose num_partitions/mesh_shape so the axis size '
              'divides it, or map its logical axis to None in '
              'logical_axis_rules.')

  # ------------------------------------------------------------- placing

  def shard(self, tree, specs, what: str = 'param'):
    """Checks then places `tree` on the mesh according to `specs`."""
    self.check_fits(tree, specs, what)
    return jax.device_put(tree, self.shardings(specs))

  def with_shardings(self, shapes, specs, what: str = 'param') -> Any:
    """Abstract arrays (ShapeDtypeStructs) carrying their mesh shardings: the
    target a checkpoint restores onto, or what a jit is lowered for."""
    self.check_fits(shapes, specs, what)
    return jax.tree.map(
        lambda a, spec: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                             sharding=self.sharding(spec)),
        shapes, specs, is_leaf=lambda x: isinstance(x, PartitionSpec))

  def params_layout(self, init_fn: Callable, *args) -> tuple[Any, Any]:
    """`(abstract params, params_specs)` of `init_fn(*args)` (Linen variables),
    without allocating anything. The abstract params are plain (unboxed)
    ShapeDtypeStructs carrying their shardings; every shape is checked to fit."""
    with self.activate():
      abstract = jax.eval_shape(init_fn, *args)
    specs = self.params_specs(abstract)
    params_shapes = unbox(abstract['params'])
    return self.with_shardings(params_shapes, specs), specs

  def initialize(self, init_fn: Callable, *args) -> tuple[Any, Any]:
    """Runs `init_fn(*args)` (returning Linen variables) directly sharded.

    Returns `(params, params_specs)`: params are created on their devices (never
    whole on one), specs are the mesh PartitionSpecs of `params`.
    """
    _, specs = self.params_layout(init_fn, *args)
    init_params = lambda *a: unbox(init_fn(*a)['params'])
    params = self.partition(init_params,
                            out_shardings=self.shardings(specs))(*args)
    return params, specs

  def optimizer_state_specs(self, opt_state_shapes, params_specs,
                            params_shapes) -> Any:
    """PartitionSpecs for an optax state, mirroring the params' specs.

    The one policy for every optimizer, Adafactor included: any subtree of the
    state shaped like the params tree (Adam's `mu`/`nu`, momentum, Adafactor's
    `v`, `v_row`, `v_col`) takes the params' specs leaf by leaf. A leaf whose
    shape drops one of the param's dims (Adafactor's factored statistics) keeps
    the specs of the dims it keeps, so it is split where its param is; other
    leaves (counts, scalars, placeholders) are replicated.
    """
    params_specs = frozen_dict.unfreeze(params_specs)
    params_shapes = frozen_dict.unfreeze(params_shapes)
    params_def = jax.tree.structure(params_shapes)
    flat_specs = jax.tree.leaves(
        params_specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    flat_param_shapes = [np.shape(x) for x in jax.tree.leaves(params_shapes)]

    def like_params(node):
      try:
        return jax.tree.structure(node) == params_def
      except TypeError:
        return False

    def spec_for(path, node):
      if not like_params(node):
        return jax.tree.map(lambda _: PartitionSpec(), node)
      # optax's Adafactor drops the later of two equal-sized dims from
      # `v_row` and the earlier one from `v_col`: that settles square params.
      drop_last = _path_name(path[-1:]) == 'v_row'
      leaves = jax.tree.leaves(node)
      out = [_derived_spec(np.shape(leaf), shape, spec, drop_last)
             for leaf, shape, spec in zip(leaves, flat_param_shapes,
                                          flat_specs)]
      return jax.tree.unflatten(params_def, out)

    return jax.tree_util.tree_map_with_path(spec_for, opt_state_shapes,
                                            is_leaf=like_params)

  def data_spec(self, ndim: int) -> PartitionSpec:
    """Batch features: leading (batch) dim on the mesh axis `batch` maps to."""
    return self.logical_to_mesh_axes((axis_names.BATCH,) + (None,) * (ndim - 1))

  def batch_specs(self, batch: Mapping[str, Any]) -> dict:
    self.check_sequence_lengths(batch)
    return {k: self.data_spec(np.ndim(v)) for k, v in batch.items()}

  def check_sequence_lengths(self, batch: Mapping[str, Any]) -> None:
    """On a mesh with a sequence axis, every `[batch, length]` feature's
    length must divide over it: say which does not, and the fix."""
    if axis_names.SEQUENCE not in self.mesh.shape:
      return
    parts = self.mesh.shape[axis_names.SEQUENCE]
    for name, value in batch.items():
      shape = np.shape(value)
      if len(shape) >= 2 and shape[1] % parts:
        raise ValueError(
            f'batch feature {name} has length {shape[1]}, which does not '
            f'divide over the sequence axis of {parts} devices: choose '
            f'task_feature_lengths that are multiples of {parts}, or fewer '
            'NUM_SEQUENCE_PARTITIONS.')

  def shard_batch(self, batch: Mapping[str, Any],
                  replicate_indivisible: bool = False) -> dict:
    """A batch every process holds in full -> global arrays whose leading
    (batch) dim is split over the data axis.

    A batch that does not divide over the data axis raises the "does not
    divide" error, unless `replicate_indivisible` (evaluation and inference:
    a small last batch on many devices) replicates it instead: slower, same
    results.
    """
    batch = {k: np.asarray(jax.device_get(v)) for k, v in batch.items()}
    specs = self.batch_specs(batch)
    if replicate_indivisible:
      specs = {k: spec if self._divides(batch[k].shape, spec) else PartitionSpec()
               for k, spec in specs.items()}
    self.check_fits(batch, specs, what='batch feature')
    return {k: jax.make_array_from_callback(
        v.shape, self.sharding(specs[k]), lambda index, v=v: v[index])
            for k, v in batch.items()}

  def global_batch(self, local_batch: Mapping[str, Any]) -> dict:
    """This process's rows of a batch -> global arrays split over the data
    axis (training: each process reads its own shard of the data)."""
    local_batch = {k: np.asarray(v) for k, v in local_batch.items()}
    specs = self.batch_specs(local_batch)
    global_shapes = {k: (v.shape[0] * jax.process_count(),) + v.shape[1:]
                     for k, v in local_batch.items()}
    self.check_fits({k: jax.ShapeDtypeStruct(s, np.int32)
                     for k, s in global_shapes.items()}, specs,
                    what='batch feature')
    return {k: jax.make_array_from_process_local_data(self.sharding(specs[k]), v,
                                                      global_shapes[k])
            for k, v in local_batch.items()}

  def _divides(self, shape, spec) -> bool:
    for dim, mesh_axes in enumerate(spec):
      names = (() if mesh_axes is None else
               mesh_axes if isinstance(mesh_axes, tuple) else (mesh_axes,))
      if shape[dim] % math.prod(self.mesh.shape[n] for n in names):
        return False
    return True


def unbox(tree) -> Any:
  """Plain nested dicts, without `LogicallyPartitioned` boxes or FrozenDicts."""
  return frozen_dict.unfreeze(nn.meta.unbox(tree))


def _derived_spec(leaf_shape, param_shape, param_spec,
                  drop_last: bool = False) -> PartitionSpec:
  if tuple(leaf_shape) == tuple(param_shape):
    return param_spec
  spec = tuple(param_spec) + (None,) * (len(param_shape) - len(param_spec))
  if len(leaf_shape) == len(param_shape) - 1:
    candidates = [d for d in range(len(param_shape))
                  if tuple(param_shape[:d] + param_shape[d + 1:]) ==
                  tuple(leaf_shape)]
    if candidates:
      dropped = candidates[-1] if drop_last else candidates[0]
      return PartitionSpec(*(spec[:dropped] + spec[dropped + 1:]))
  return PartitionSpec()


def _flatten(tree) -> dict:
  flat, _ = jax.tree_util.tree_flatten_with_path(frozen_dict.unfreeze(tree))
  return {tuple(_path_name([k]) for k in path): leaf for path, leaf in flat}


def _flatten_specs(tree) -> dict:
  flat, _ = jax.tree_util.tree_flatten_with_path(
      frozen_dict.unfreeze(tree),
      is_leaf=lambda x: isinstance(x, PartitionSpec))
  return {tuple(_path_name([k]) for k in path): leaf for path, leaf in flat}


class PartitionedFunction:
  """A jitted function whose calls and lowerings happen under the partitioner's
  mesh and logical axis rules (so activation constraints apply)."""

  def __init__(self, partitioner: Partitioner, jitted):
    self._partitioner = partitioner
    self._jitted = jitted

  def __call__(self, *args, **kwargs):
    with self._partitioner.activate():
      return self._jitted(*args, **kwargs)

  def lower(self, *args, **kwargs):
    with self._partitioner.activate():
      return self._jitted.lower(*args, **kwargs)


def flatten_specs_for_display(specs) -> dict[str, PartitionSpec]:
  """`{'encoder/layers_0/attention/query/kernel': PartitionSpec(...)}` for logs
  and golden tables."""
  return {'/'.join(k): v for k, v in _flatten_specs(specs).items()}


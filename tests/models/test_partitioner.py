"""Partitioner: mesh construction, logical -> mesh specs, optimizer-state specs
and the errors for meshes and shapes that do not fit."""
import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import standin_networks
from fovea_jax.sharding import axis_names
from fovea_jax.sharding import partitioner as partitioning

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow


def _init(module=None, batch=8):
  module = module or standin_networks.StandInDecoderOnly(vocab_size=16)
  tokens = jnp.ones((batch, 4))
  return lambda rng: module.init(rng, tokens, tokens, enable_dropout=False)


def test_mesh_shapes_and_errors():
  assert jax.device_count() == 8
  assert dict(partitioning.Partitioner().mesh.shape) == {'data': 8, 'model': 1}
  p = partitioning.Partitioner(num_partitions=2)
  assert dict(p.mesh.shape) == {'data': 4, 'model': 2}
  assert p.mesh.axis_types == (jax.sharding.AxisType.Auto,) * 2
  assert dict(partitioning.Partitioner(mesh_shape=(2, 4)).mesh.shape) == {
      'data': 2, 'model': 4}
  assert dict(partitioning.Partitioner(
      model_parallel_submesh=(1, 1, 1, 2)).mesh.shape)['model'] == 2
  assert p.logical_axis_rules == axis_names.STANDARD_RULES
  with pytest.raises(ValueError, match='does not divide the 8 available'):
    partitioning.Partitioner(num_partitions=3)
  with pytest.raises(ValueError, match=r'needs 6 devices but 8'):
    partitioning.Partitioner(mesh_shape=(3, 2))
  with pytest.raises(ValueError, match='at most one'):
    partitioning.Partitioner(num_partitions=2, mesh_shape=(4, 2))


def test_specs_follow_rules_and_params_are_placed():
  p = partitioning.Partitioner(num_partitions=2)
  params, specs = p.initialize(_init(), jax.random.PRNGKey(0))
  flat = partitioning.flatten_specs_for_display(specs)
  assert flat['token_embedder'] == P('model', None)
  assert flat['decoder/mlp/wi'] == P(None, 'model')
  assert flat['decoder/self_attention/query'] == P(None, 'model', None)
  assert params['decoder']['mlp']['wi'].sharding.spec == P(None, 'model')
  custom = partitioning.Partitioner(
      num_partitions=2, logical_axis_rules=((axis_names.MLP, None),))
  _, custom_specs = custom.initialize(_init(), jax.random.PRNGKey(0))
  assert partitioning.flatten_specs_for_display(
      custom_specs)['decoder/mlp/wi'] == P(None, None)


def test_optimizer_state_mirrors_params():
  p = partitioning.Partitioner(num_partitions=2)
  params, specs = p.initialize(_init(), jax.random.PRNGKey(0))
  adam = p.optimizer_state_specs(jax.eval_shape(optax.adamw(1e-3).init, params),
                                 specs, params)
  assert adam[0].mu == specs and adam[0].nu == specs
  assert adam[0].count == P()
  factored = optax.adafactor(1e-3, min_dim_size_to_factor=4)
  state_shapes = jax.eval_shape(factored.init, params)
  state_specs = p.optimizer_state_specs(state_shapes, specs, params)
  state = p.shard(factored.init(params), state_specs, what='optimizer state')
  wi = params['decoder']['mlp']['wi']  # [embed 8, mlp 32], mlp on 'model'
  leaves = [(s.shape, s.sharding.spec) for s in jax.tree.leaves(state)
            if s.shape in ((8,), (32,))]
  assert ((32,), P('model')) in leaves and ((8,), P(None)) in leaves
  assert wi.shape == (8, 32)


def test_non_dividing_param_and_batch_name_the_culprit():
  p = partitioning.Partitioner(num_partitions=4)
  odd = standin_networks.StandInDecoderOnly(vocab_size=18, heads=4)
  with pytest.raises(ValueError, match=r'token_embedder: dim 0 has size 18.*'
                     r"'model' of size 4"):
    p.initialize(_init(odd), jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=r'batch feature decoder_input_tokens: '
                     r'dim 0 has size 3'):
    p.shard_batch({'decoder_input_tokens': jnp.ones((3, 4))})
  batch = p.shard_batch({'decoder_input_tokens': jnp.ones((4, 4))})
  assert batch['decoder_input_tokens'].sharding.spec == P('data', None)


# Names that build shardings or place arrays on a mesh. Only the Partitioner
# (fovea_jax/sharding/) may use them; the Pallas kernels' shard_map helper
# needs PartitionSpecs for its in/out specs and is the one exception.
_SHARDING_BUILDERS = {
    'NamedSharding', 'PartitionSpec', 'Mesh', 'logical_to_mesh',
    'logical_to_mesh_axes', 'logical_to_mesh_sharding', 'get_partition_spec',
    'make_array_from_callback', 'make_array_from_process_local_data',
    'set_mesh', 'axis_rules'}
# Attention's own shard_maps (per-shard kernels, sequence parallelism) name
# the specs of their bodies.
_ALLOWED = ('fovea_jax/sharding/', 'fovea_jax/attention/pallas/sharding.py',
            'fovea_jax/attention/context_parallel.py')


def _sharding_uses(source: str) -> list[tuple[int, str]]:
  uses = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Name) and node.id in _SHARDING_BUILDERS:
      uses.append((node.lineno, node.id))
    elif isinstance(node, ast.Attribute) and node.attr in _SHARDING_BUILDERS:
      uses.append((node.lineno, node.attr))
    elif isinstance(node, ast.ImportFrom):
      uses += [(node.lineno, a.name) for a in node.names
               if a.name in _SHARDING_BUILDERS]
  return uses


def test_sharding_is_built_only_by_the_partitioner():
  root = pathlib.Path(partitioning.__file__).parents[2]
  # The check itself must see a violation when there is one.
  assert _sharding_uses('s = jax.sharding.NamedSharding(m, P())') == [
      (1, 'NamedSharding')]
  offenders = []
  for path in sorted((root / 'fovea_jax').rglob('*.py')):
    relative = path.relative_to(root).as_posix()
    if relative.startswith(_ALLOWED):
      continue
    offenders += [f'{relative}:{line} {name}'
                  for line, name in _sharding_uses(path.read_text())]
  assert not offenders, (
      'Sharding built outside fovea_jax/sharding/ (ask the Partitioner '
      f'instead): {offenders}')


def test_square_params_factored_statistics_keep_their_own_dim():
  p = partitioning.Partitioner(num_partitions=2)
  params = {'w': jax.ShapeDtypeStruct((16, 16), jnp.float32)}
  specs = {'w': P(None, 'model')}
  factored = optax.adafactor(1e-3, min_dim_size_to_factor=4)
  state_shapes = jax.eval_shape(factored.init, params)
  state_specs = partitioning.flatten_specs_for_display(
      p.optimizer_state_specs(state_shapes, specs, params))
  # optax's v_row is indexed by dim 0 when the sizes tie: after one update
  # with rows of different scale, it follows the rows' mean squared gradient.
  w = {'w': jnp.ones((16, 16))}
  grad = {'w': jnp.tile(jnp.arange(1., 17.)[:, None], (1, 16))}
  _, state = factored.update(grad, factored.init(w), w)
  [v_row] = [x for path, x in jax.tree_util.tree_leaves_with_path(state)
             if 'v_row' in jax.tree_util.keystr(path)]
  np.testing.assert_allclose(v_row / v_row[0], np.arange(1., 17.) ** 2,
                             rtol=1e-4)
  assert {k.split('/')[-2]: v for k, v in state_specs.items()
          if k.split('/')[-2] in ('v_row', 'v_col')} == {
              'v_row': P(None), 'v_col': P('model')}


def test_sequence_axis_mesh_rules_and_errors():
  p = partitioning.Partitioner(num_sequence_partitions=4)
  assert dict(p.mesh.shape) == {'data': 2, 'sequence': 4, 'model': 1}
  # Activations split along their length, params never.
  assert p.logical_to_mesh_axes((axis_names.BATCH, axis_names.LENGTH,
                                 axis_names.EMBED)) == P('data', 'sequence',
                                                         None)
  assert p.logical_to_mesh_axes((axis_names.EMBED, axis_names.MLP)) == P(
      None, 'model')
  assert dict(partitioning.Partitioner(mesh_shape=(1, 4, 2)).mesh.shape) == {
      'data': 1, 'sequence': 4, 'model': 2}
  with pytest.raises(ValueError, match='does not divide the 8'):
    partitioning.Partitioner(num_partitions=2, num_sequence_partitions=3)
  with pytest.raises(ValueError, match='give one of them'):
    partitioning.Partitioner(mesh_shape=(2, 2, 2), num_sequence_partitions=4)
  with pytest.raises(ValueError, match=r'decoder_input_tokens has length 30.*'
                     'multiples of 4'):
    p.shard_batch({'decoder_input_tokens': np.zeros((2, 30), np.int32)})
  # Without the axis, the table's own `length` rule (replicated) holds.
  assert partitioning.Partitioner().logical_to_mesh_axes(
      (axis_names.BATCH, axis_names.LENGTH)) == P('data', None)

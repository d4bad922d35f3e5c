"""A tiny LongT5-style model trained by the real Trainer on (4, 2) and (2, 4)
meshes of 8 fake CPU devices: the loss goes down, params and the factored
Adafactor state carry the golden PartitionSpecs, and one device gives the same
losses to 1e-5; beam search on the mesh decodes as on one device."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from fovea_jax.optim import lr_schedules
from fovea_jax.optim import optimizers
from fovea_jax.sharding import partitioner as partitioning
from fovea_jax.training import trainer as trainer_lib
from gin_models import build_model

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

SHAPES = {'encoder_input_tokens': (8, 32), 'decoder_input_tokens': (8, 8)}
STEPS = 3

# Param path suffix -> mesh specs under T5X's standard rules on a (data, model)
# mesh: vocab, heads and mlp split over 'model'; embed, kv, buckets replicated.
# Columns: the param, then Adafactor's factored statistics (optax drops the
# largest dim from v_row and the second largest from v_col, ties to the later
# dim), each keeping the specs of the dims it keeps; P() where a param is not
# factored (its v_row/v_col are (1,) placeholders, v is param-shaped).
#   tiny: embed 32, heads 4 x kv 8, mlp 64, vocab 384, 32 buckets.
GOLDEN_SPECS = {
    # suffix: (param, v_row, v_col)
    'token_embedder/embedding': (P('model', None), P(None), P('model')),
    'attention/query/kernel': (P(None, 'model', None), P('model', None),
                               P(None, 'model')),
    'attention/key/kernel': (P(None, 'model', None), P('model', None),
                             P(None, 'model')),
    'attention/value/kernel': (P(None, 'model', None), P('model', None),
                               P(None, 'model')),
    'attention/out/kernel': (P('model', None, None), P('model', None),
                             P('model', None)),
    'mlp/wi_0/kernel': (P(None, 'model'), P(None), P('model')),
    'mlp/wi_1/kernel': (P(None, 'model'), P(None), P('model')),
    'mlp/wo/kernel': (P('model', None), P(None), P('model')),
    'relpos_bias/rel_embedding': (P(None, 'model'), P(), P()),  # 4 < 8
    'logits_dense/kernel': (P(None, 'model'), P(None), P('model')),
    'norm/scale': (P(None), P(), P()),
}


def _batches():
  rng = np.random.default_rng(0)
  enc = rng.integers(3, 300, SHAPES['encoder_input_tokens'])
  # A copy task on a short prefix: learnable in a few steps.
  targets = np.concatenate([enc[:, :7], np.ones((8, 1), int)], axis=1)
  inputs = np.concatenate([np.zeros((8, 1), int), targets[:, :-1]], axis=1)
  return {'encoder_input_tokens': enc, 'decoder_input_tokens': inputs,
          'decoder_target_tokens': targets,
          'decoder_loss_weights': np.ones_like(targets, np.float32)}


def _train(model, partitioner):
  trainer = trainer_lib.Trainer(
      model, partitioner,
      learning_rate_fn=lr_schedules.create_learning_rate_scheduler(
          'constant', base_learning_rate=0.05),
      # Factor every matrix with two dims >= 8, so the tiny model has
      # factored statistics to place.
      optimizer=functools.partial(optimizers.adafactor,
                                  min_dim_size_to_factor=8))
  init = functools.partial(model.get_initial_variables, input_shapes=SHAPES)
  layout = trainer.state_layout(init)
  state = trainer.init_state(init, jax.random.PRNGKey(0))
  losses = []
  for _ in range(STEPS):
    state, metrics = trainer.train_step(
        state, partitioner.global_batch(_batches()), jax.random.PRNGKey(1))
    losses.append(float(metrics['loss']))
  return state, layout.specs, losses


def _golden(name):
  golden = [v for k, v in GOLDEN_SPECS.items() if name.endswith(k)]
  assert len(golden) == 1, f'{name} has no single golden entry'
  return golden[0]


def _check_golden(state, specs):
  flat = partitioning.flatten_specs_for_display(specs.params)
  for name, spec in flat.items():
    assert spec == _golden(name)[0], name
  statistics = 0
  for name, spec in partitioning.flatten_specs_for_display(
      specs.opt_state).items():
    parts = name.split('/')
    kind = next((p for p in parts if p in ('v_row', 'v_col', 'v')), None)
    if kind is None:  # Step counts.
      assert spec == P(), name
      continue
    param = '/'.join(parts[parts.index(kind) + 1:])
    param_spec, v_row, v_col = _golden(param)
    expected = {'v': param_spec if v_row == P() else P(), 'v_row': v_row,
                'v_col': v_col}[kind]
    assert spec == expected, name
    statistics += 1
  assert statistics == 3 * len(flat)
  # The live arrays sit where the specs say.
  for leaf, spec in zip(jax.tree.leaves(state),
                        jax.tree.leaves(specs, is_leaf=lambda x: isinstance(
                            x, P))):
    assert leaf.sharding.spec == spec


@pytest.fixture(scope='module')
def model():
  return build_model(['sizes/tiny.gin', 'attention/dense.gin'],
                     ['DROPOUT_RATE = 0.0'])


@pytest.fixture(scope='module')
def one_device_losses(model):
  _, _, losses = _train(model, partitioning.Partitioner(
      devices=jax.devices()[:1]))
  return losses


@pytest.mark.parametrize('mesh_shape', [(4, 2), (2, 4)])
def test_trainer_on_mesh_matches_one_device(model, one_device_losses,
                                            mesh_shape):
  assert jax.device_count() == 8
  partitioner = partitioning.Partitioner(mesh_shape=mesh_shape)
  state, specs, mesh_losses = _train(model, partitioner)
  assert mesh_losses[-1] < mesh_losses[0] - 0.1, mesh_losses
  _check_golden(state, specs)
  model_size = mesh_shape[1]
  wi = state.params['encoder']['layers_0']['mlp']['wi_0']['kernel']
  assert wi.addressable_shards[0].data.shape == (32, 64 // model_size)
  np.testing.assert_allclose(mesh_losses, one_device_losses, atol=1e-5, rtol=0)


def test_beam_search_on_the_mesh_equals_one_device():
  model = build_model(['sizes/tiny.gin', 'attention/fovea.gin'],
                      ['fovea.Fovea.block_len = 4'])
  batch = {'encoder_input_tokens': jnp.asarray(
               np.random.default_rng(1).integers(2, 300, (8, 32))),
           'decoder_input_tokens': jnp.zeros((8, 6), jnp.int32)}
  shapes = {k: v.shape for k, v in batch.items()}
  partitioner = partitioning.Partitioner(mesh_shape=(4, 2))
  params, specs = partitioner.initialize(
      lambda rng: model.get_initial_variables(rng, shapes),
      jax.random.PRNGKey(0))
  predict = lambda p, b: model.predict_batch_with_aux(  # 4 beams (gin)
      p, b, return_all_decodes=True)
  on_mesh, aux_mesh = partitioner.partition(
      predict, in_shardings=(partitioner.shardings(specs),
                             partitioner.shardings(
                                 partitioner.batch_specs(batch))))(
                                     params, partitioner.shard_batch(batch))
  on_host, aux_host = jax.jit(predict)(jax.device_get(params), batch)
  assert on_mesh.shape == (8, 4, 6)
  np.testing.assert_array_equal(on_mesh, on_host)
  np.testing.assert_allclose(aux_mesh['scores'], aux_host['scores'],
                             atol=1e-4)

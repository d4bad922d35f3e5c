"""A tiny LongT5-style model trained on a (4, 2) mesh of 8 fake CPU devices:
the loss goes down, params carry the golden PartitionSpecs, and one device
gives the same losses to 1e-5; beam search on the mesh decodes as on one
device."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from fovea_jax.sharding import partitioner as partitioning
from gin_models import build_model

SHAPES = {'encoder_input_tokens': (8, 32), 'decoder_input_tokens': (8, 8)}
STEPS = 3

# Param path suffix -> mesh spec under T5X's standard rules on a (data, model)
# mesh: vocab, heads and mlp split over 'model'; embed, kv, buckets replicated.
GOLDEN_SPECS = {
    'token_embedder/embedding': P('model', None),
    'attention/query/kernel': P(None, 'model', None),
    'attention/key/kernel': P(None, 'model', None),
    'attention/value/kernel': P(None, 'model', None),
    'attention/out/kernel': P('model', None, None),
    'mlp/wi_0/kernel': P(None, 'model'),
    'mlp/wi_1/kernel': P(None, 'model'),
    'mlp/wo/kernel': P('model', None),
    'relpos_bias/rel_embedding': P(None, 'model'),
    'logits_dense/kernel': P(None, 'model'),
    'norm/scale': P(None),
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
  params, specs = partitioner.initialize(
      lambda rng: model.get_initial_variables(rng, SHAPES),
      jax.random.PRNGKey(0))
  optimizer = optax.adam(3e-3)
  state_specs = partitioner.optimizer_state_specs(
      jax.eval_shape(optimizer.init, params), specs, params)
  opt_state = partitioner.partition(
      optimizer.init, out_shardings=partitioner.shardings(state_specs))(params)
  batch = partitioner.shard_batch(_batches())

  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(
        lambda p: model.loss_fn(p, batch, dropout_rng=None)[0])(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  param_shardings = partitioner.shardings(specs)
  train_step = partitioner.partition(
      step,
      in_shardings=(param_shardings, partitioner.shardings(state_specs),
                    partitioner.shardings(partitioner.batch_specs(batch))),
      out_shardings=(param_shardings, partitioner.shardings(state_specs),
                     None))
  losses = []
  for _ in range(STEPS):
    params, opt_state, loss = train_step(params, opt_state, batch)
    losses.append(float(loss))
  return params, specs, losses


@pytest.fixture(scope='module')
def model():
  return build_model(['sizes/tiny.gin', 'attention/dense.gin'],
                     ['DROPOUT_RATE = 0.0'])


def test_mesh_training_matches_one_device(model):
  assert jax.device_count() == 8
  mesh_partitioner = partitioning.Partitioner(mesh_shape=(4, 2))
  params, specs, mesh_losses = _train(model, mesh_partitioner)
  assert mesh_losses[-1] < mesh_losses[0] - 0.1, mesh_losses

  flat = partitioning.flatten_specs_for_display(specs)
  for name, spec in flat.items():
    golden = [v for k, v in GOLDEN_SPECS.items() if name.endswith(k)]
    assert len(golden) == 1, f'{name} has no single golden entry'
    assert spec == golden[0], name
  wi = params['encoder']['layers_0']['mlp']['wi_0']['kernel']
  assert wi.sharding.spec == P(None, 'model')
  assert wi.addressable_shards[0].data.shape == (32, 32)  # mlp 64 over 2

  one_device = partitioning.Partitioner(devices=jax.devices()[:1])
  _, _, single_losses = _train(model, one_device)
  np.testing.assert_allclose(mesh_losses, single_losses, atol=1e-5, rtol=0)


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

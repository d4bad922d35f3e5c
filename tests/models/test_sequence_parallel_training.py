"""Training with one sequence split over devices: a decoder-only LM and a
LongT5 encoder-decoder (fovea attention) trained by the real Trainer on a
(data 2, sequence 4) mesh of 8 fake CPU devices give the 1-device run's
losses to 1e-5, with activations split along the sequence and params not."""
import functools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from fovea_jax.optim import lr_schedules
from fovea_jax.optim import optimizers
from fovea_jax.sharding import partitioner as partitioning
from fovea_jax.training import trainer as trainer_lib
from gin_models import build_model

pytestmark = pytest.mark.slow  # compiles training steps

STEPS = 3
# One layer per stack: every attention kind (self, causal self, cross) once.
BINDINGS = ['fovea.Fovea.block_len = 8', 'DROPOUT_RATE = 0.0',
            'network.Config.num_decoder_layers = 1']


def _lm_batch():
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, 300, (4, 72))
  tokens[:, 40:72] = tokens[:, 8:40]  # a repeat a long way back: learnable
  return {'decoder_input_tokens': tokens[:, :64],
          'decoder_target_tokens': tokens[:, 1:65],
          'decoder_loss_weights': np.ones((4, 64), np.float32)}


def _encdec_batch():
  rng = np.random.default_rng(0)
  enc = rng.integers(3, 300, (4, 64))
  targets = np.concatenate([enc[:, :15], np.ones((4, 1), int)], axis=1)
  inputs = np.concatenate([np.zeros((4, 1), int), targets[:, :-1]], axis=1)
  return {'encoder_input_tokens': enc, "decoder_input_tokens": inputs,
          'decoder_target_tokens': targets,
          'decoder_loss_weights': np.ones_like(targets, np.float32)}


def _train(model, partitioner, batch):
  trainer = trainer_lib.Trainer(
      model, partitioner,
      learning_rate_fn=lr_schedules.create_learning_rate_scheduler(
          'constant', base_learning_rate=0.05),
      optimizer=functools.partial(optimizers.adafactor,
                                  min_dim_size_to_factor=8))
  shapes = {k: v.shape for k, v in batch.items() if k.endswith('input_tokens')}
  init = functools.partial(model.get_initial_variables, input_shapes=shapes)
  state = trainer.init_state(init, jax.random.PRNGKey(0))
  losses = []
  for _ in range(STEPS):
    state, metrics = trainer.train_step(state, partitioner.global_batch(batch),
                                        jax.random.PRNGKey(1))
    losses.append(float(metrics['loss']))
  return state, losses


@pytest.mark.parametrize('gin_files,bindings,batch', [
    (['sizes/decoder_only_tiny.gin', 'attention/fovea.gin'], [], _lm_batch),
    (['sizes/tiny.gin', 'attention/fovea.gin'],
     ['network.Config.num_encoder_layers = 1'], _encdec_batch),
], ids=['decoder_only', 'encoder_decoder'])
def test_data_sequence_mesh_matches_one_device(gin_files, bindings, batch):
  model = build_model(gin_files, BINDINGS + bindings)
  _, one = _train(model, partitioning.Partitioner(devices=jax.devices()[:1]),
                  batch())
  partitioner = partitioning.Partitioner(num_sequence_partitions=4)
  assert dict(partitioner.mesh.shape) == {'data': 2, 'sequence': 4, 'model': 1}
  state, sharded = _train(model, partitioner, batch())
  assert sharded[-1] < sharded[0], sharded
  np.testing.assert_allclose(sharded, one, atol=1e-5, rtol=0)
  for leaf in jax.tree.leaves(state.params):  # params are not split
    assert 'sequence' not in jax.tree.leaves(tuple(leaf.sharding.spec))

"""Trainer on the tiny stand-in model: learning, microbatching, mixed precision."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax.optim import lr_schedules
from fovea_jax.optim import optimizers
from fovea_jax.training import trainer as trainer_lib
from . import tiny_model


def make_trainer(mesh_shape=(4, 2), **kw):
  model = tiny_model.TinyModel()
  kw.setdefault('learning_rate_fn', lr_schedules.create_learning_rate_scheduler(
      'constant', base_learning_rate=0.05))
  trainer = trainer_lib.Trainer(model, tiny_model.make_partitioner(mesh_shape),
                                **kw)
  init = functools.partial(model.get_initial_variables,
                           input_shapes={'decoder_input_tokens': (8, 8)})
  return trainer, trainer.init_state(init, jax.random.PRNGKey(0))


def run(trainer, state, steps):
  history = []
  for i in range(steps):
    state, metrics = trainer.train_step(
        state, trainer.partitioner.global_batch(tiny_model.synthetic_batch(i)),
        jax.random.PRNGKey(1))
    history.append(jax.device_get(metrics))
  return state, history


@pytest.mark.slow
def test_adafactor_default_learns_and_reports_metrics():
  trainer, state = make_trainer()
  assert state.params['wi'].sharding.spec == jax.sharding.PartitionSpec(None,
                                                                        'model')
  state, history = run(trainer, state, 25)
  assert history[-1]['loss'] < 0.3 * history[0]['loss']
  assert history[-1]['accuracy'] > history[0]['accuracy']
  assert history[0]['num_tokens'] == 64
  assert history[0]['learning_rate'] == np.float32(0.05)
  assert int(state.step) == 25


@pytest.mark.slow
def test_microbatches_give_the_full_batch_gradient():
  full, state_full = make_trainer(optimizer=optimizers.adamw)
  micro, state_micro = make_trainer(optimizer=optimizers.adamw,
                                    num_microbatches=4)
  state_full, h_full = run(full, state_full, 2)
  state_micro, h_micro = run(micro, state_micro, 2)
  np.testing.assert_allclose(h_full[-1]['grad_norm'], h_micro[-1]['grad_norm'],
                             rtol=1e-5)
  for a, b in zip(jax.tree.leaves(state_full.params),
                  jax.tree.leaves(state_micro.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_master_weights():
  trainer, state = make_trainer(compute_dtype='bfloat16')
  state, history = run(trainer, state, 15)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
  assert history[-1]['loss'] < 0.5 * history[0]['loss']

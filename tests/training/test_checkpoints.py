"""Orbax checkpoints: keep K, reshard across meshes, clear failures."""
import functools
import os

import jax
import numpy as np
import pytest

from fovea_jax.optim import lr_schedules
from fovea_jax.training import checkpoints
from fovea_jax.training import trainer as trainer_lib
from . import tiny_model

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow


def trained_state(mesh_shape, steps=2):
  model = tiny_model.TinyModel()
  trainer = trainer_lib.Trainer(
      model, tiny_model.make_partitioner(mesh_shape),
      learning_rate_fn=lr_schedules.create_learning_rate_scheduler(
          'constant', base_learning_rate=0.05))
  init = functools.partial(model.get_initial_variables,
                           input_shapes={'decoder_input_tokens': (8, 8)})
  state = trainer.init_state(init, jax.random.PRNGKey(0))
  for i in range(steps):
    state, _ = trainer.train_step(
        state, trainer.partitioner.global_batch(tiny_model.synthetic_batch(i)),
        jax.random.PRNGKey(1))
  return trainer, init, state


def save(model_dir, state, **kw):
  manager = checkpoints.CheckpointManager(
      str(model_dir), checkpoints.SaveCheckpointConfig(**kw))
  manager.save(state, meta={'dataset': {'position': 7}})
  manager.wait_until_finished()
  manager.close()


def assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
@pytest.mark.parametrize('target_mesh', [(1, 1), (2, 4)])
def test_checkpoint_from_4x2_restores_identically_on_other_meshes(tmp_path,
                                                                  target_mesh):
  _, _, state = trained_state((4, 2))
  save(tmp_path, state)
  trainer, init, _ = trained_state(target_mesh, steps=0)
  restored, meta = checkpoints.restore(
      checkpoints.RestoreCheckpointConfig(path=str(tmp_path)),
      trainer.state_layout(init).abstract)
  assert meta['dataset'] == {'position': 7} and int(restored.step) == 2
  assert_same(restored.params, state.params)
  assert_same(restored.opt_state, state.opt_state)
  assert restored.params['wi'].sharding.mesh.devices.shape == target_mesh
  # The restored state trains on its new mesh.
  trainer.train_step(
      restored, trainer.partitioner.global_batch(tiny_model.synthetic_batch(2)),
      jax.random.PRNGKey(1))


@pytest.mark.slow
def test_keep_and_params_only_restore(tmp_path):
  trainer, init, state = trained_state((8, 1), steps=0)
  manager = checkpoints.CheckpointManager(
      str(tmp_path), checkpoints.SaveCheckpointConfig(period=1, keep=2))
  for i in range(3):
    state, _ = trainer.train_step(
        state, trainer.partitioner.global_batch(tiny_model.synthetic_batch(i)),
        jax.random.PRNGKey(1))
    manager.save(state)
  manager.wait_until_finished()
  assert list(manager.all_steps()) == [2, 3]
  manager.close()
  warm, _ = checkpoints.restore(
      checkpoints.RestoreCheckpointConfig(
          path=checkpoints.step_dir(str(tmp_path), 2), mode='specific',
          strict=False, dtype='bfloat16'), trainer.state_layout(init).abstract)
  assert warm.opt_state is None and warm.params['wi'].dtype == 'bfloat16'


def test_missing_checkpoint_fails_unless_fallback(tmp_path):
  trainer, init, _ = trained_state((8, 1), steps=0)
  abstract = trainer.state_layout(init).abstract
  config = checkpoints.RestoreCheckpointConfig(path=str(tmp_path / 'nothing'))
  with pytest.raises(checkpoints.CheckpointError,
                     match='No checkpoint found.*fallback_to_scratch'):
    checkpoints.restore(config, abstract)
  config.fallback_to_scratch = True
  assert checkpoints.restore(config, abstract) == (None, None)


@pytest.mark.slow
def test_corrupt_checkpoint_fails_naming_it(tmp_path):
  trainer, init, state = trained_state((8, 1), steps=1)
  save(tmp_path, state)
  params_dir = os.path.join(checkpoints.step_dir(str(tmp_path), 1), 'params')
  for root, _, files in os.walk(params_dir):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'garbage')
  with pytest.raises(checkpoints.CheckpointError, match='checkpoint_1.*corrupt'):
    checkpoints.restore(checkpoints.RestoreCheckpointConfig(path=str(tmp_path)),
                        trainer.state_layout(init).abstract)

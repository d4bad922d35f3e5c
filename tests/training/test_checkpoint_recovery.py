"""Checkpoints never lose work: real tiny runs through the train entry point.

A damaged newest checkpoint is reported and moved aside, and the run resumes
from the previous one exactly; all damaged -> non-zero exit, nothing touched
(or, asked for explicitly, a fresh start with the damaged ones kept aside);
another optimizer -> a clear error; SIGKILL in an async save -> resume from
the last complete one."""
import glob
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_file_loader

from fovea_jax.training import checkpoints
from . import gin_runs
from . import loop_harness

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
STEPS = 4  # Checkpoints at 2 and 4.


def bindings(model_dir, *extra):
  return gin_runs.train_bindings(model_dir, STEPS) + [
      'CHECKPOINT_PERIOD = 2', 'train.random_seed = 3', *extra]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A finished 4-step run: (model dir, its final params on the host)."""
  model_dir = str(tmp_path_factory.mktemp('trained') / 'run')
  result = gin_runs.run('train', 'runs/pretrain.gin', bindings(model_dir))
  return model_dir, [np.asarray(x) for x in
                     jax.tree.leaves(jax.device_get(result.state.params))]


def copy_run(trained, tmp_path):
  model_dir = str(tmp_path / 'run')
  shutil.copytree(trained[0], model_dir)
  return model_dir


def damage(model_dir, step):
  """Truncates the array data files of checkpoint_<step>'s params; returns one."""
  data = os.path.join(checkpoints.step_dir(model_dir, step), 'params', 'd')
  files = sorted(os.path.join(data, f) for f in os.listdir(data))
  for path in files:
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
  return files[0]


def checkpoint_files(model_dir):
  """{path: size} of every file of every checkpoint, wherever it lies."""
  out = {}
  for root, _, files in os.walk(model_dir):
    for name in files:
      path = os.path.join(root, name)
      if 'checkpoint_' in path:
        out[os.path.relpath(path, model_dir)] = os.path.getsize(path)
  return out


def test_damaged_newest_is_moved_aside_and_the_previous_resumes_exactly(
    trained, tmp_path, caplog):
  model_dir = copy_run(trained, tmp_path)
  damaged = damage(model_dir, 4)
  with caplog.at_level(logging.WARNING):
    result = gin_runs.run('train', 'runs/pretrain.gin', bindings(model_dir))
  assert result.start_step == 2
  [line] = [r.getMessage() for r in caplog.records
            if 'unreadable' in r.getMessage()]
  assert 'step 4' in line and damaged in line and 'resuming from step 2' in line
  aside = os.path.join(model_dir, checkpoints.UNREADABLE_DIR, 'checkpoint_4')
  assert os.path.isdir(aside)  # Moved, not pruned.
  assert checkpoints.checkpoint_steps(model_dir) == [2, 4]
  for a, b in zip(jax.tree.leaves(jax.device_get(result.state.params)),
                  trained[1]):
    np.testing.assert_array_equal(a, b)


def test_all_damaged_exits_non_zero_and_touches_nothing_unless_asked(
    trained, tmp_path):
  model_dir = copy_run(trained, tmp_path)
  damage(model_dir, 2)
  damage(model_dir, 4)
  before = checkpoint_files(model_dir)
  process = subprocess.run(
      [sys.executable, '-m', 'fovea_jax.train',
       f'--gin_file={gin_runs.STANDIN_MODEL_GIN}',
       '--gin_file=runs/pretrain.gin'] +
      [f'--gin_bindings={b}' for b in bindings(model_dir)],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True,
      text=True, timeout=300)
  assert process.returncode != 0
  assert 'No checkpoint in' in process.stderr
  assert 'fallback_to_scratch = True' in process.stderr
  assert checkpoint_files(model_dir) == before

  # Asked for explicitly: a fresh start, the damaged ones kept aside.
  result = gin_runs.run('train', 'runs/pretrain.gin', bindings(
      model_dir, 'CheckpointConfig.restore = @RestoreCheckpointConfig()',
      'RestoreCheckpointConfig.fallback_to_scratch = True'))
  assert result.start_step == 0
  unreadable = os.path.join(model_dir, checkpoints.UNREADABLE_DIR)
  assert sorted(os.listdir(unreadable)) == ['checkpoint_2', 'checkpoint_4']
  moved = {k.replace(checkpoints.UNREADABLE_DIR + os.sep, ''): v
           for k, v in checkpoint_files(model_dir).items()
           if k.startswith(checkpoints.UNREADABLE_DIR)}
  assert moved == before


def test_another_optimizer_is_a_clear_error_and_nothing_is_pruned(
    trained, tmp_path):
  model_dir = copy_run(trained, tmp_path)
  before = checkpoint_files(model_dir)
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"checkpoint_4 holds the state of optimizer "
                     r"'adafactor', but this run uses 'adamw'.*nothing"):
    gin_runs.run('train', 'runs/pretrain.gin', bindings(
        model_dir, 'Trainer.optimizer = @adamw'))
  assert checkpoint_files(model_dir) == before


def test_sigkill_during_an_async_save_resumes_from_the_last_complete_one(
    tmp_path):
  model_dir = str(tmp_path / 'killed')
  command = [sys.executable, '-m', 'tests.training.loop_harness', model_dir, '6']
  child = subprocess.Popen(
      command, cwd=REPO,
      env=dict(os.environ, PYTHONPATH=REPO, HANG_SAVE_AT_STEP='4'))
  deadline = time.time() + 240
  while not os.path.exists(os.path.join(model_dir, 'saving_4')):
    assert child.poll() is None and time.time() < deadline
    time.sleep(0.1)
  child.send_signal(signal.SIGKILL)
  child.wait()
  # Step 4's files are there, uncommitted; step 2 is the last complete one.
  assert any(name.startswith('checkpoint_4.') for name in os.listdir(model_dir))
  assert checkpoints.checkpoint_steps(model_dir) == [2]
  # TensorBoard events (under train/, as T5X) were flushed at each save.
  [events] = glob.glob(os.path.join(model_dir, 'train', 'events.out.tfevents.*'))
  steps = {e.step for e in event_file_loader.EventFileLoader(events).Load()
           if e.summary.value}
  assert {1, 2} <= steps  # At least up to the completed save of step 2.

  resumed = loop_harness.train(model_dir, 6)
  assert resumed.start_step == 2
  assert checkpoints.checkpoint_steps(model_dir) == [2, 4, 6]
  straight = loop_harness.train(tmp_path / 'straight', 6)
  for a, b in zip(jax.tree.leaves(resumed.state.params),
                  jax.tree.leaves(straight.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

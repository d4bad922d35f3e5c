"""The loop: resume is bit-identical, SIGTERM saves, NaN stops, kill -9 resumes."""
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from fovea_jax.training import checkpoints
from fovea_jax.training import metrics_writers
from fovea_jax.training import train_loop
from . import loop_harness
from . import tiny_model

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state.params)]


@pytest.mark.slow
def test_stop_and_resume_equals_uninterrupted(tmp_path):
  straight = loop_harness.train(tmp_path / 'straight', 6)
  first = loop_harness.train(tmp_path / 'resumed', 4)
  assert first.start_step == 0
  resumed = loop_harness.train(tmp_path / 'resumed', 6)
  assert resumed.start_step == 4
  for a, b in zip(leaves(straight.state), leaves(resumed.state)):
    np.testing.assert_array_equal(a, b)
  records = metrics_writers.read_jsonl(str(tmp_path / 'straight/metrics.jsonl'))
  assert [r['step'] for r in records] == [1, 2, 3, 4, 5, 6]
  assert records[-1]['loss'] < records[0]['loss']
  assert {'accuracy', 'learning_rate', 'tokens_per_second'} <= set(records[0])


@pytest.mark.slow
def test_sigterm_saves_and_returns(tmp_path):
  def terminate_at_3(step, state):
    if step == 3:
      os.kill(os.getpid(), signal.SIGTERM)

  result = loop_harness.train(tmp_path, 10, period=100,
                              step_callback=terminate_at_3)
  assert result.stopped_by_signal and int(result.state.step) == 3
  assert os.path.isdir(checkpoints.step_dir(str(tmp_path), 3))


@pytest.mark.slow
def test_non_finite_loss_stops_naming_step_and_last_good_checkpoint(tmp_path):
  with pytest.raises(train_loop.NonFiniteLossError,
                     match=r'nan at step 6 .*checkpoint_4'):
    loop_harness.train(tmp_path, 10,
                       batches=loop_harness.synthetic_batches(nan_at_step=5))
  steps = checkpoints.CheckpointManager(
      str(tmp_path), checkpoints.SaveCheckpointConfig()).all_steps()
  assert list(steps) == [2, 4]


@pytest.mark.slow
def test_adafactor_blow_up_stops_naming_step_and_last_good_checkpoint(tmp_path):
  loop_harness.train(tmp_path, 2)
  # Resumed at lr 1e9: the next gradient overflows while the loss is finite.
  with pytest.raises(train_loop.NonFiniteLossError,
                     match=r'Gradient norm is inf at step 4 .*checkpoint_2'):
    loop_harness.train(tmp_path, 10, base_learning_rate=1e9)
  assert checkpoints.checkpoint_steps(str(tmp_path)) == [2]


def test_collapse_with_zero_gradient_stops_like_a_non_finite_loss(tmp_path):
  # A dead network (all weights 0): positive loss, every gradient exactly 0.
  dead = tiny_model.TinyModel(init_scale=0.0)
  with pytest.raises(train_loop.CollapseError,
                     match=r'collapsed at step 1 .*gradient norm is exactly 0 '
                     r'while the loss is 2.7.*Last good checkpoint: none'):
    loop_harness.train(tmp_path, 4, model=dead)
  assert isinstance(train_loop.CollapseError('x'), train_loop.DivergenceError)
  assert checkpoints.checkpoint_steps(str(tmp_path)) == []


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_is_bit_identical(tmp_path):
  model_dir = str(tmp_path / 'killed')
  command = [sys.executable, '-m', 'tests.training.loop_harness', model_dir, '8']
  env = dict(os.environ, PYTHONPATH=REPO)
  child = subprocess.Popen(command, cwd=REPO, env=env)
  deadline = time.time() + 300
  while not os.path.isdir(checkpoints.step_dir(model_dir, 4)):
    assert child.poll() is None and time.time() < deadline
    time.sleep(0.1)
  child.send_signal(signal.SIGKILL)
  child.wait()
  assert not os.path.exists(os.path.join(model_dir, 'final_params.npz'))
  subprocess.run(command, cwd=REPO, env=env, check=True, timeout=300)
  records = metrics_writers.read_jsonl(os.path.join(model_dir, 'metrics.jsonl'))
  assert records[0]['step'] == 1 and records[-1]['step'] == 8
  straight = loop_harness.train(tmp_path / 'straight', 8)
  restarted = np.load(os.path.join(model_dir, 'final_params.npz'))
  for i, expected in enumerate(leaves(straight.state)):
    np.testing.assert_array_equal(restarted[f'arr_{i}'], expected)

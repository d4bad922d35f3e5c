"""Bad configuration fails before training, with a message naming the fix."""
import os
import subprocess
import sys

import pytest

from fovea_jax.runs import gin_utils
from fovea_jax.training import checkpoints
from . import gin_runs

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


@pytest.mark.slow
def test_command_line_rejects_an_unknown_gin_binding(tmp_path):
  process = subprocess.run(
      [sys.executable, '-m', 'fovea_jax.train',
       f'--gin_file={gin_runs.STANDIN_MODEL_GIN}',
       '--gin_file=runs/pretrain.gin', '--gin.trainer.Trainer.num_microbatchez=2'],
      cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=REPO),
      capture_output=True, text=True, timeout=120)
  assert process.returncode != 0
  assert 'num_microbatchez' in process.stderr
  assert 'Gin configuration rejected' in process.stderr
  assert not os.listdir(tmp_path)


def test_shorthand_flags_become_bindings():
  assert gin_utils.rewrite_gin_args(
      ['prog', '--gin.MODEL_DIR="/x"', '--gin_file=a.gin']) == [
          'prog', '--gin_bindings=MODEL_DIR = "/x"', '--gin_file=a.gin']


def test_missing_task_names_close_matches(tmp_path):
  bindings = gin_runs.train_bindings(tmp_path, 1) + [
      "MIXTURE_OR_TASK_NAME = 'stdlib_summarisation'"]
  with pytest.raises(ValueError, match="stdlib_summarisation.*stdlib_summarization"):
    gin_runs.run('train', 'runs/pretrain.gin', bindings)
  assert not os.path.exists(tmp_path / 'checkpoint_1')


def test_missing_checkpoint_without_fallback(tmp_path):
  with pytest.raises(checkpoints.CheckpointError, match='fallback_to_scratch'):
    gin_runs.run('evaluate', 'runs/eval.gin', gin_runs.checkpoint_bindings(
        tmp_path / 'no_such_run', 'EVAL_OUTPUT_DIR', tmp_path / 'eval'))
  bindings = gin_runs.train_bindings(tmp_path / 'ft', 1) + [
      "CheckpointConfig.restore = @RestoreCheckpointConfig()",
      f"RestoreCheckpointConfig.path = '{tmp_path}/pre/checkpoint_5'"]
  with pytest.raises(checkpoints.CheckpointError, match='checkpoint_5'):
    gin_runs.run('train', 'runs/pretrain.gin', bindings)


def test_lengths_the_attention_cannot_serve_fail_before_training(tmp_path):
  # FMA's learned downsampling has filters for inputs up to max_length only.
  small_fma = tmp_path / 'small_fma.gin'
  small_fma.write_text('\n'.join([
      'from __gin__ import dynamic_registration',
      'from fovea_jax.layers.schemes import fma',
      "fma.Fma.downsample = 'grouped_conv'", 'fma.Fma.max_length = 32',
      'fma.Fma.fine_len = 16',
      'fma.Fma.rank = 4']))
  with pytest.raises(ValueError, match=r"(?s)TASK_FEATURE_LENGTHS=.*'inputs': 64.*"
                     r'cannot be served.*max_length=32.*raise fma.Fma.max_length.*'
                     r'The attention is fma.Fma\(.*--gin.fma.Fma.<option>'):
    gin_runs.run('train', 'runs/pretrain.gin',
                 gin_runs.train_bindings(tmp_path, 1),
                 model_gin=['sizes/tiny.gin', 'attention/fma.gin',
                            str(small_fma)])
  assert not os.path.exists(tmp_path / 'checkpoint_1')

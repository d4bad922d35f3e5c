"""A user's mistake on the command line ends the run with one line that names
the problem and the fix: no traceback, exit status 1."""
import os
import subprocess
import sys

import pytest

from fovea_jax.data.errors import DataError
from fovea_jax.runs import entry_points
from fovea_jax.tasks import stdlib_sources
from fovea_jax.training.checkpoints import CheckpointError
from fovea_jax.training.fingerprint import ModelMismatchError
from fovea_jax.training.model_inputs import ModelInputError
from fovea_jax.training.train_loop import NonFiniteLossError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _run(module, args, cwd):
  return subprocess.run(
      [sys.executable, '-m', module, *args], cwd=str(cwd), capture_output=True,
      text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO))


def _assert_one_line(process, expected_start):
  assert process.returncode == 1, process.stderr[-3000:]
  last = process.stderr.strip().splitlines()[-1]
  assert last.startswith(expected_start), process.stderr[-3000:]
  assert 'Traceback' not in process.stderr
  assert 'In call to configurable' not in process.stderr
  return last


@pytest.mark.parametrize('error, kind', [
    (DataError('f.jsonl', 'the file is empty', 'write lines'), 'data error'),
    (CheckpointError('Could not restore /x'), 'checkpoint error'),
    (ModelMismatchError('/x was written for another model'), 'model mismatch'),
    (NonFiniteLossError('loss is NaN at step 3'), 'training diverged'),
    (ModelInputError('packed examples cannot be served'),
     'inputs the model cannot serve'),
])
def test_each_user_error_has_its_kind(error, kind):
  assert isinstance(error, tuple(entry_points.user_errors()))
  assert entry_points._error_kind(error) == kind  # pylint: disable=protected-access


def test_message_drops_gins_call_note():
  error = CheckpointError('Could not restore /x. Fix: point it elsewhere.\n'
                          "  In call to configurable 'evaluate' (<function>)")
  assert entry_points._message(error) == (  # pylint: disable=protected-access
      'Could not restore /x. Fix: point it elsewhere.')


def test_missing_standard_library_is_a_data_error(tmp_path):
  missing = tmp_path / 'no_stdlib'
  with pytest.raises(DataError) as raised:
    stdlib_sources.load_modules(str(missing))
  assert raised.value.where == str(missing)
  assert 'does not exist' in raised.value.problem
  assert 'standard library as source' in raised.value.fix


@pytest.mark.slow
def test_misspelt_gin_file_is_one_line(tmp_path):
  # Run from another directory than the repository: the shipped files are
  # found through the package, and the nearest names are suggested.
  process = _run('fovea_jax.train', ['--gin_file=runs/pretrian.gin'], tmp_path)
  last = _assert_one_line(process, 'fovea_jax.train: gin error: ')
  assert "'runs/pretrian.gin' was not found" in last
  assert 'runs/pretrain.gin' in last


@pytest.mark.slow
def test_damaged_checkpoint_is_one_line(tmp_path):
  checkpoint = tmp_path / 'run' / 'checkpoint_5'
  checkpoint.mkdir(parents=True)
  (checkpoint / 'checkpoint').write_bytes(b'not a checkpoint')
  process = _run('fovea_jax.eval', [
      '--gin_file=sizes/decoder_only_tiny.gin',
      '--gin_file=attention/dense.gin', '--gin_file=runs/eval.gin',
      "--gin.MIXTURE_OR_TASK_NAME='stdlib_lm'",
      "--gin.TASK_FEATURE_LENGTHS={'targets': 64}",
      f"--gin.CHECKPOINT_PATH='{tmp_path / 'run'}'",
      f"--gin.EVAL_OUTPUT_DIR='{tmp_path / 'eval'}'"], tmp_path)
  last = _assert_one_line(process, 'fovea_jax.eval: checkpoint error: ')
  assert f'Could not restore {checkpoint}' in last

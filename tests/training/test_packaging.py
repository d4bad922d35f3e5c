"""A regular (non-editable) install runs from any directory: the gin files ship
with the package, command-line overrides reach the run, misspelt macros fail,
and the log is readable.

The project is installed with pip into a temporary directory (reusing this
environment's dependencies) and run there with only that directory on
PYTHONPATH, from a working directory with no gin files in it.
"""
import os
import pathlib
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).parents[2]


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  site = tmp_path_factory.mktemp('site')
  subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
                  '--no-build-isolation', '--target', str(site), str(REPO)],
                 check=True, capture_output=True, timeout=300)
  return site


def _run(site, cwd, *args, timeout=600):
  # One CPU device (the test session fakes eight), only the install importable.
  env = {k: v for k, v in os.environ.items()
         if k not in ('PYTHONPATH', 'XLA_FLAGS')}
  env.update(PYTHONPATH=str(site), JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _train_args(model_dir, *extra):
  return ['-m', 'fovea_jax.train', '--gin_file=sizes/tiny.gin',
          '--gin_file=attention/fovea.gin', '--gin_file=runs/pretrain.gin',
          "--gin.MIXTURE_OR_TASK_NAME='stdlib_summarization'",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 128, 'targets': 16}",
          '--gin.TRAIN_STEPS=2', '--gin.BATCH_SIZE=2',
          f"--gin.MODEL_DIR='{model_dir}'", *extra]


def test_installed_package_trains_from_another_directory(installed, tmp_path):
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  where = _run(installed, elsewhere, '-c',
               'import fovea_jax, fovea_jax.runs.gin_utils as g; '
               'print(fovea_jax.__file__); print(g.packaged_gin_dir())')
  assert where.returncode == 0, where.stderr
  package_file, gin_dir = where.stdout.split()
  assert package_file.startswith(str(installed))
  assert gin_dir == str(installed / 'fovea_jax' / 'gin_configs')

  model_dir = tmp_path / 'run'
  done = _run(installed, elsewhere, *_train_args(
      model_dir, '--gin.fovea.Fovea.block_len=64',
      '--gin.train_lib.train.stats_period=1'))
  assert done.returncode == 0, done.stderr[-3000:]
  # A log a person can read: one plain line per stats period, no progress bar
  # (stderr is not a terminal), no CUDA probing, no gin file-lookup lines.
  log = done.stderr
  assert re.search(r'step 1/2: loss [\d.]+, accuracy [\d.]+, \d+ tokens/s, '
                   r'learning rate [\d.e-]+', log), log[-3000:]
  assert 'step 2/2: loss' in log
  assert '\r' not in log and 'cuInit' not in log
  assert 'resource_reader' not in log and 'Path not found' not in log
  assert 'fovea.Fovea.block_len = 64' in (model_dir / 'config.gin').read_text()
  # The operative config is what the model was built with.
  operative = (model_dir / 'operative_config.gin').read_text()
  assert 'fovea.Fovea.block_len = 64' in operative
  assert 'Training finished at step 2' in done.stderr


def test_misspelt_macro_fails_naming_the_known_one(installed, tmp_path):
  failed = _run(installed, tmp_path, *_train_args(tmp_path / 'run',
                                                   '--gin.BATCH_SIZ=3'))
  assert failed.returncode != 0
  assert "Unknown macro 'BATCH_SIZ'" in failed.stderr
  assert 'BATCH_SIZE' in failed.stderr
  assert not (tmp_path / 'run').exists()

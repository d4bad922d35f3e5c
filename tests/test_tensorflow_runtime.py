"""TensorFlow and seqio come only from fovea_jax.tensorflow_runtime.

That module silences TensorFlow's native start-up lines ('failed call to
cuInit', 'Could not find cuda drivers', oneDNN notes) and hides the GPU from
it; a module importing seqio or TensorFlow itself, first, would print those
lines again on every CPU run (seen in `make quickstart` when its baseline step
imported seqio directly). Attention users never load TensorFlow.
"""
import ast
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
RUNTIME = REPO / 'fovea_jax' / 'tensorflow_runtime.py'
TENSORFLOW_LIBRARIES = ('seqio', 'tensorflow', 'tensorflow_text',
                        'tensorflow_datasets')
START_UP_NOISE = ('cuInit', 'cuda', 'CUDA', 'oneDNN', 'absl::InitializeLog')


def _imported_modules(tree):
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      yield node.lineno, node.module


def test_only_the_runtime_imports_tensorflow_libraries():
  direct = []
  for folder in ('fovea_jax', 'tools', 'experiments'):
    for path in sorted((REPO / folder).rglob('*.py')):
      if path == RUNTIME:
        continue
      for lineno, name in _imported_modules(ast.parse(path.read_text())):
        if name.split('.')[0] in TENSORFLOW_LIBRARIES:
          direct.append(f'{path.relative_to(REPO)}:{lineno} ({name})')
  assert not direct, (
      'import seqio/TensorFlow through `from fovea_jax.tensorflow_runtime '
      f'import seqio, tf`, not directly: {direct}')


def _python(code):
  """Runs `code` in a fresh interpreter with this checkout first on the path
  and without the test session's TensorFlow log setting."""
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')])
  return subprocess.run([sys.executable, '-c', code], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        check=True)


@pytest.mark.slow
def test_attention_alone_loads_no_tensorflow_and_data_starts_quietly():
  done = _python(
      'import sys\n'
      'import fovea_jax, fovea_jax.attention\n'
      'print("attention loads tensorflow:", "tensorflow" in sys.modules)\n'
      'import fovea_jax.data, fovea_jax.tasks, fovea_jax.evaluation.evaluator\n'
      'from fovea_jax.tensorflow_runtime import tf\n'
      'print("tensorflow sees GPUs:", tf.config.get_visible_devices("GPU"))\n')
  assert 'attention loads tensorflow: False' in done.stdout
  assert 'tensorflow sees GPUs: []' in done.stdout
  noise = [line for line in done.stderr.splitlines()
           if any(word in line for word in START_UP_NOISE)]
  assert not noise, noise

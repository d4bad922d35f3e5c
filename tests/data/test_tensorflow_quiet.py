"""TensorFlow is always first imported through fovea_jax.data.tensorflow_setup.

That module silences TensorFlow's native start-up lines ('failed call to cuInit',
'Could not find cuda drivers') and hides the GPU from it. seqio imports
TensorFlow, so a module that imports seqio (or TensorFlow) before the setup made
every CPU run print those lines again (seen in `make quickstart`, whose
baseline step imported seqio first).
"""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / 'fovea_jax'
TENSORFLOW_USERS = ('seqio', 'tensorflow', 'tensorflow_text', 'tensorflow_datasets')
SETUP = 'fovea_jax.data.tensorflow_setup'


def _imports(node):
  """Module names imported by one import statement."""
  if isinstance(node, ast.Import):
    return [alias.name for alias in node.names]
  if isinstance(node, ast.ImportFrom) and node.module:
    return [node.module] + [f'{node.module}.{a.name}' for a in node.names]
  return []


def test_every_tensorflow_import_comes_after_the_setup():
  late = []
  for path in sorted(PACKAGE.rglob('*.py')):
    if path.name == 'tensorflow_setup.py':
      continue
    setup_seen = False
    statements = sorted((n for n in ast.walk(ast.parse(path.read_text()))
                         if isinstance(n, (ast.Import, ast.ImportFrom))),
                        key=lambda n: n.lineno)  # in source order
    for node in statements:
      names = _imports(node)
      if SETUP in names:
        setup_seen = True
      elif any(n.split('.')[0] in TENSORFLOW_USERS for n in names) and not (
          setup_seen):
        late.append(f'{path.relative_to(PACKAGE.parent)}:{node.lineno}')
  assert not late, ('import fovea_jax.data.tensorflow_setup before seqio/'
                    f'TensorFlow in: {late}')

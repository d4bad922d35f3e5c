"""The package's import graph, read from the source (nothing is executed), has
the shape of the architecture: folders (subpackages) import one another without
a cycle, so each can be read and tested on top of the ones below it, and no tree
engine imports another engine (they share helpers through
fovea_jax/attention/layout.py and common.py)."""
import ast
import collections
import pathlib

from fovea_jax.attention import engines

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / 'fovea_jax'


def _module_name(path):
  parts = list(path.relative_to(REPO).with_suffix('').parts)
  if parts[-1] == '__init__':
    parts.pop()
  return '.'.join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
PACKAGES = {name for name, p in MODULES.items() if p.name == '__init__.py'}


def _imports(module):
  """The fovea_jax modules `module` imports (at any depth of its code)."""
  tree = ast.parse(MODULES[module].read_text())
  package = module if module in PACKAGES else module.rpartition('.')[0]
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        anchor = package.split('.')[:len(package.split('.')) - node.level + 1]
        base = '.'.join(anchor + ([base] if base else []))
      # `from package import module` imports the module.
      names = [f'{base}.{a.name}' if f'{base}.{a.name}' in MODULES else base
               for a in node.names]
    else:
      continue
    for name in names:
      while name and name not in MODULES:  # `import a.b.c` of a function path
        name = name.rpartition('.')[0]
      if name:
        yield name


def _folder(module):
  """The subpackage of fovea_jax holding `module` (its nested packages count
  as part of it), or a top-level module, which is a floor of its own."""
  return '.'.join(module.split('.')[:2])


def _folder_edges():
  edges = collections.defaultdict(dict)  # folder -> {folder: an example}
  for module in MODULES:
    for target in _imports(module):
      a, b = _folder(module), _folder(target)
      if a != b and b != 'fovea_jax':
        edges[a].setdefault(b, f'{module} imports {target}')
  return edges


def _cycle(edges):
  """One cycle of folders as a list, or None."""
  state = {}

  def visit(node, path):
    state[node] = 'open'
    for nxt in sorted(edges.get(node, ())):
      if state.get(nxt) == 'open':
        return path[path.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt, path + [nxt])
        if found:
          return found
    state[node] = 'done'
    return None

  for start in sorted(edges):
    if start not in state:
      found = visit(start, [start])
      if found:
        return found
  return None


def test_folders_import_each_other_without_a_cycle():
  edges = _folder_edges()
  cycle = _cycle(edges)
  assert cycle is None, 'folders import in a cycle: ' + '; '.join(
      edges[a][b] for a, b in zip(cycle, cycle[1:]))


def test_the_cycle_check_finds_a_cycle():
  edges = {'a': {'b': 'a->b'}, 'b': {'c': 'b->c'}, 'c': {'a': 'c->a'}}
  assert _cycle(edges) == ['a', 'b', 'c', 'a']
  assert _cycle({'a': {'b': ''}, 'b': {}}) is None


def _engine_of(module):
  for path in engines.TREE_ENGINES.values():
    engine = path.split(':')[0]
    if module == engine or module.startswith(engine + '.'):
      return engine
  return None


def test_no_tree_engine_imports_another_engine():
  engine_modules = {p.split(':')[0] for p in engines.TREE_ENGINES.values()}
  assert len(engine_modules) >= 2 and all(
      any(m == e or m.startswith(e + '.') for m in MODULES)
      for e in engine_modules)
  crossing = [f'{module} imports {target}'
              for module in MODULES if _engine_of(module)
              for target in _imports(module)
              if _engine_of(target) not in (None, _engine_of(module))]
  assert not crossing, (
      'engines share helpers through fovea_jax/attention/layout.py or '
      f'common.py, not through each other: {crossing}')

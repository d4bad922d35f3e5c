"""The Python standard library's own sources as an offline long-text corpus.

Every machine with Python has these files; many modules are longer than 16k
bytes and open with a human-written docstring that summarises them. This file
finds the modules, separates each module's docstring from the rest of its
source, and assigns every module to a split by a hash of its path relative to
the stdlib root (the same on every machine with the same Python version).
It builds no datasets; `stdlib_tasks.py` does.
"""
import ast
import dataclasses
import functools
import hashlib
import inspect
import os
import pathlib
import re
import sysconfig
from typing import Dict, List, Optional, Tuple

from fovea_jax.data.errors import DataError

# Percent of modules in each split, by hash bucket (train takes the rest).
VALIDATION_PERCENT = 5
TEST_PERCENT = 5
SPLITS = ('train', 'validation', 'test')

# Test suites and installed third-party packages are not the standard library's
# documented modules (and lib2to3's test data is not even Python 3).
_SKIPPED_DIRS = frozenset({
    'site-packages', 'dist-packages', '__pycache__', 'test', 'tests',
    'idle_test', 'data', 'ensurepip', 'turtledemo',
})


@dataclasses.dataclass(frozen=True)
class StdlibModule:
  """One module: where it is, its full source, and its docstring split off."""
  relative_path: str
  source: str
  source_without_docstring: str
  docstring_summary: str


# The outline task's windows hold at most this many bytes: with the
# end-of-sequence token, a 256-token input holds one whole. Short windows give
# many distinct examples per module (about 11k in the train split) at a cost
# per step that lets a small model learn to copy names in a few minutes of CPU.
OUTLINE_SOURCE_BYTES = 255
# A definition: `def name`, `async def name` or `class name` opening a line.
_DEFINITION = re.compile(r'^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+'
                         r'([^\W\d]\w*)', re.MULTILINE)


def defined_names(text: str) -> str:
  """The names of every `def`, `async def` and `class` opening a line of
  `text`, methods and nested functions included, in order, space-separated."""
  return ' '.join(_DEFINITION.findall(text))


def outline(source: str, limit: int = OUTLINE_SOURCE_BYTES) -> Tuple[str, str]:
  """(the first `limit` UTF-8 bytes of `source`, the names defined there).

  Everything the target needs is in the input, anywhere in it.
  """
  cut = source.encode('utf-8')[:limit].decode('utf-8', errors='ignore')
  return cut, defined_names(cut)


def outline_windows(source: str,
                    limit: int = OUTLINE_SOURCE_BYTES) -> List[Tuple[str, str]]:
  """`source` cut into consecutive windows of at most `limit` UTF-8 bytes,
  each as (window, the names defined in it), in order.

  A window ends after the last whole line that fits, so a definition line is
  never split between windows; only where no line end fits after the first
  byte (a line longer than `limit`) is it cut at `limit` bytes, dropping a
  partial character. Together the windows hold all of `source` but such
  split characters.
  """
  encoded = source.encode('utf-8')
  windows = []
  start = 0
  while start < len(encoded):
    end = min(len(encoded), start + limit)
    if end < len(encoded):
      newline = encoded.rfind(b'\n', start, end)
      if newline > start:
        end = newline + 1
    window = encoded[start:end].decode('utf-8', errors='ignore')
    windows.append((window, defined_names(window)))
    start = end
  return windows


def stdlib_root() -> pathlib.Path:
  return pathlib.Path(sysconfig.get_paths()['stdlib'])


def split_of(relative_path: str) -> str:
  """'train', 'validation' or 'test', from a stable hash of the module path."""
  digest = hashlib.sha256(relative_path.encode('utf-8')).digest()
  bucket = int.from_bytes(digest[:8], 'big') % 100
  if bucket < VALIDATION_PERCENT:
    return 'validation'
  if bucket < VALIDATION_PERCENT + TEST_PERCENT:
    return 'test'
  return 'train'


def first_paragraph(docstring: str) -> str:
  """The docstring's first paragraph as one line of single-spaced text."""
  paragraph = inspect.cleandoc(docstring).strip().split('\n\n')[0]
  return ' '.join(paragraph.split())


def remove_module_docstring(source: str) -> Tuple[str, Optional[str]]:
  """Returns (source without its module docstring, the docstring or None).

  The docstring's exact characters are cut out (ast gives its span), leaving
  everything else, comments and shebang included, untouched.
  """
  tree = ast.parse(source)
  docstring = ast.get_docstring(tree, clean=False)
  if docstring is None:
    return source, None
  node = tree.body[0]
  # ast columns count UTF-8 bytes, so cut in bytes.
  encoded = source.encode('utf-8')
  line_starts = [0]
  for line in encoded.splitlines(keepends=True):
    line_starts.append(line_starts[-1] + len(line))
  start = line_starts[node.lineno - 1] + node.col_offset
  end = line_starts[node.end_lineno - 1] + node.end_col_offset
  if node.col_offset == 0 and encoded[end:end + 1] == b'\n':
    end += 1  # The docstring had its own lines: leave no blank line behind.
  remainder = encoded[:start] + encoded[end:]
  return remainder.decode('utf-8').strip('\n') + '\n', docstring


def _module_paths(root: pathlib.Path) -> List[pathlib.Path]:
  paths = []
  for directory, subdirs, files in os.walk(root):
    subdirs[:] = sorted(d for d in subdirs
                        if d not in _SKIPPED_DIRS and not d.startswith('config-'))
    paths.extend(pathlib.Path(directory) / f for f in sorted(files)
                 if f.endswith('.py') and not f.startswith('test_'))
  return paths


def load_modules(root: Optional[str] = None) -> Tuple[StdlibModule, ...]:
  """Every stdlib module that parses and has a non-empty docstring summary.

  Sorted by relative path so that datasets built from it are deterministic.
  Parsed once per process and root.
  """
  return _load_modules(str(root or stdlib_root()))


@functools.lru_cache(maxsize=4)
def _load_modules(root: str) -> Tuple[StdlibModule, ...]:
  root_path = pathlib.Path(root)
  if not root_path.is_dir():
    raise DataError(
        root_path, 'the standard-library tasks read the Python sources of '
        'this folder, and it does not exist (a Python installed without its '
        '.py files)',
        'run with a Python that ships its standard library as source (e.g. '
        'python.org or pyenv builds, Debian\'s libpython3-stdlib), or train on '
        'another task (docs/data.md)')
  modules = []
  for path in _module_paths(root_path):
    try:
      source = path.read_text(encoding='utf-8')
      without_docstring, docstring = remove_module_docstring(source)
    except (UnicodeDecodeError, SyntaxError, ValueError):
      continue  # A few files are deliberately broken or not UTF-8.
    if docstring is None:
      continue
    summary = first_paragraph(docstring)
    if not summary or not without_docstring.strip():
      continue
    modules.append(StdlibModule(
        relative_path=path.relative_to(root_path).as_posix(),
        source=source,
        source_without_docstring=without_docstring,
        docstring_summary=summary))
  if not modules:
    raise ValueError(f'No documented Python modules found under {root_path}.')
  return tuple(modules)


def modules_by_split(root: Optional[str] = None) -> Dict[str, List[StdlibModule]]:
  by_split = {split: [] for split in SPLITS}
  for module in load_modules(root):
    by_split[split_of(module.relative_path)].append(module)
  return by_split

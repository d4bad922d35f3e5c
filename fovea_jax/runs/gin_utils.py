"""Gin plumbing for the entry points: T5X's flags, where gin files are found,
and clear errors for names that do not exist.

Flags: `--gin_file` (repeatable), `--gin_search_paths` and `--gin.NAME=VALUE`
(T5X's shorthand for `--gin_bindings='NAME = VALUE'`).

A gin file name (and every `include` inside one) is looked up in this order:
the gin files shipped with fovea_jax (`packaged_gin_dir()`), then each
`--gin_search_paths` directory, then the working directory; an absolute path is
used as is. So `--gin_file=sizes/tiny.gin` works from any directory, with a
source checkout or a `pip install`ed package.

Bindings given on the command line are checked before anything runs: an unknown
configurable or parameter and a macro that no gin file defines or uses (T5X
would silently ignore `--gin.BATCH_SIZ=2`) raise GinConfigError naming the
nearest known names.
"""
import contextlib
import difflib
import importlib.resources
import inspect
import logging
import os
import re
import sys
from typing import Callable, Optional, Sequence

from absl import app
from absl import flags
import gin


flags.DEFINE_multi_string('gin_file', [], 'Gin config files, parsed in order.')
flags.DEFINE_multi_string('gin_bindings', [],
                          "Individual bindings, e.g. 'TRAIN_STEPS = 100'.")
flags.DEFINE_list('gin_search_paths', [],
                  'Directories searched for gin files and their includes, after '
                  "fovea_jax's own gin files and before the working directory.")

_SHORTHAND = re.compile(r'^--gin\.([^=]+)=(.*)$', re.DOTALL)
# The left-hand side of a binding: [scope/]selector[.param] or a MACRO.
_BINDING = re.compile(r'^\s*([A-Za-z_][\w./]*)\s*=', re.DOTALL)


class GinConfigError(ValueError):
  """A gin file or binding does not fit the code."""


def packaged_gin_dir() -> str:
  """The directory of the gin files that ship with fovea_jax.

  An installed package (wheel, `pip install .`) carries them as package data in
  `fovea_jax/gin_configs/` (setup.py maps the repository's top-level
  `gin_configs/` there); a source checkout on PYTHONPATH reads that top-level
  directory itself.
  """
  package = importlib.resources.files('fovea_jax')
  installed = package / 'gin_configs'
  if installed.is_dir():
    return str(installed)
  return os.path.join(os.path.dirname(str(package)), 'gin_configs')


def search_dirs(search_paths: Sequence[str] = ()) -> list[str]:
  """Where relative gin file names are looked up, in order ('' = cwd)."""
  return [packaged_gin_dir(), *(os.path.abspath(p) for p in search_paths), '']


def resolve_gin_file(name: str, search_paths: Sequence[str] = ()) -> str:
  """The path `name` refers to (see the module docstring for the order)."""
  name = os.path.expanduser(name)
  if os.path.isabs(name):
    if os.path.isfile(name):
      return name
    raise GinConfigError(f'Gin file {name} does not exist.')
  for directory in search_dirs(search_paths):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return os.path.abspath(path)
  shipped = sorted(
      os.path.relpath(os.path.join(root, f), packaged_gin_dir())
      for root, _, files in os.walk(packaged_gin_dir())
      for f in files if f.endswith('.gin'))
  nearest = difflib.get_close_matches(name, shipped, n=3, cutoff=0.5)
  raise GinConfigError(
      f'Gin file {name!r} was not found in {search_dirs(search_paths)[:-1]} or '
      f'the working directory {os.getcwd()}.'
      + (f' Nearest shipped files: {nearest}.' if nearest else
         f' Shipped files: {shipped}.'))


@contextlib.contextmanager
def _include_search_order(search_paths: Sequence[str]):
  """gin resolves `include` through its prefix list, which starts with the
  working directory; put fovea_jax's own files and --gin_search_paths first
  (gin 0.5 has no public call that reorders it)."""
  prefixes = gin.config._LOCATION_PREFIXES  # pylint: disable=protected-access
  saved = list(prefixes)
  prefixes[:] = search_dirs(search_paths)
  try:
    yield
  finally:
    prefixes[:] = saved


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
  """`--gin.TRAIN_STEPS=10` -> `--gin_bindings=TRAIN_STEPS = 10`."""
  out = []
  for arg in argv:
    match = _SHORTHAND.match(arg)
    out.append(f'--gin_bindings={match.group(1)} = {match.group(2)}'
               if match else arg)
  return out


def _known_macros() -> set[str]:
  """Macros the parsed files define or refer to (`NAME = ...`, `%NAME`)."""
  config = gin.config._CONFIG  # pylint: disable=protected-access
  known = {scope for scope, selector in config if selector == 'gin.macro'}
  for reference in gin.config.iterate_references(config, to=gin.config.macro):
    known.add(reference.scoped_selector.split('/')[0])  # 'NAME/gin.macro'
  return known


def _known_selectors() -> list[str]:
  """Every registered configurable by each of its usable names (the full
  module path and its dotted suffixes, as gin matches them)."""
  names = set()
  for selector, _ in gin.config._REGISTRY.items():  # pylint: disable=protected-access
    parts = selector.split('.')
    names.update('.'.join(parts[i:]) for i in range(len(parts) - 1))
  return sorted(names)


def _check_binding(binding: str, macros: set[str]) -> None:
  """Raises GinConfigError for a command-line macro no gin file knows."""
  match = _BINDING.match(binding)
  if not match:
    return  # gin's own parser reports the syntax error
  target = match.group(1)
  if '.' in target or '/' in target or target in macros:
    return
  nearest = difflib.get_close_matches(target, sorted(macros), n=3, cutoff=0.5)
  raise GinConfigError(
      f'Unknown macro {target!r} in binding {binding.strip()!r}: no gin file '
      'defines or uses it, so it would be ignored. '
      + (f'Did you mean {" or ".join(nearest)}?' if nearest else
         f'Known macros: {sorted(macros)}.'))


def _unknown_name_error(error: Exception, gin_files, search_paths) -> str:
  """gin's message plus the nearest registered names for a bad selector."""
  text = str(error)
  match = re.search(r"No configurable matching '([^']+)'", text)
  hint = ''
  if match:
    selector = match.group(1)
    nearest = difflib.get_close_matches(selector, _known_selectors(), n=3,
                                        cutoff=0.6)
    if nearest:
      hint = f'\nNearest registered configurables: {nearest}.'
  match = re.search(
      r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", text)
  if match:
    configurable = gin.config._REGISTRY.get_match(match.group(1))  # pylint: disable=protected-access
    if configurable is not None:
      names = sorted(inspect.signature(configurable.wrapped).parameters)
      nearest = difflib.get_close_matches(match.group(2), names, n=3)
      hint = (f'\nDid you mean {" or ".join(nearest)}?' if nearest else
              f'\nIts parameters: {names}.')
  return (f'Gin configuration rejected: {text}{hint}\nModel options are named '
          'module.Class.option as the gin files import them (e.g. '
          'fovea.Fovea.block_len, network.Config.num_heads), run options '
          'module.function.option (train_lib.train.stats_period), macros in '
          f'capitals (TRAIN_STEPS). Files: {list(gin_files)}; searched '
          f'{search_dirs(search_paths)[:-1]} then the working directory.')


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str] = (),
              search_paths: Sequence[str] = ()) -> None:
  """Parses files then bindings; unknown names raise GinConfigError."""
  if not gin_files:
    raise GinConfigError('No --gin_file given: pass a model file and a run file, '
                         'e.g. --gin_file=sizes/tiny.gin '
                         '--gin_file=runs/pretrain.gin.')
  paths = [resolve_gin_file(f, search_paths) for f in gin_files]
  gin.clear_config()
  root_logger = logging.getLogger()
  root_logger.addFilter(_quiet_search_misses)
  try:
    with _include_search_order(search_paths):
      gin.parse_config_files_and_bindings(paths, [], finalize_config=False,
                                          skip_unknown=False)
      macros = _known_macros()
      for binding in gin_bindings:
        _check_binding(binding, macros)
      gin.parse_config(list(gin_bindings), skip_unknown=False)
  except GinConfigError:
    raise
  except (ValueError, KeyError, IOError, NameError, AttributeError,
          SyntaxError) as e:
    raise GinConfigError(_unknown_name_error(e, gin_files, search_paths)) from e
  finally:
    root_logger.removeFilter(_quiet_search_misses)


def _quiet_search_misses(record: logging.LogRecord) -> bool:
  """gin's file lookup logs every path it tries (INFO) and an ERROR for every
  search path a file is *not* in; drop those (a missing file still raises)."""
  return not record.pathname.endswith(os.path.join('gin', 'resource_reader.py'))


def run(main: Callable[[], None], argv: Optional[Sequence[str]] = None,
        program: str = 'fovea_jax') -> None:
  """absl app.run with T5X's gin flags, then `main()` under the parsed config.

  A gin file or binding that does not fit the code ends the program with its
  one-line message (`<program>: gin error: ...`, exit status 1); the message
  names the file or binding and the fix, and a traceback through gin's parser
  would only bury it.
  """

  def _main(_):
    try:
      parse_gin(flags.FLAGS.gin_file, flags.FLAGS.gin_bindings,
                flags.FLAGS.gin_search_paths)
    except GinConfigError as e:
      raise SystemExit(f'{program}: gin error: {e}') from None
    main()

  app.run(_main, argv=rewrite_gin_args(sys.argv if argv is None else argv))

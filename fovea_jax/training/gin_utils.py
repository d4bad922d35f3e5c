"""Gin plumbing for the entry points: T5X's flags and clear config errors.

`--gin_file` (repeatable), `--gin_search_paths` and `--gin.NAME=VALUE` (T5X's
shorthand for `--gin_bindings='NAME = VALUE'`). The repository's `gin_configs/`
directory is always a search path, so `--gin_file=runs/pretrain.gin` works from
any working directory. Unknown configurables or parameters fail before anything
runs, naming the binding.
"""
import logging
import os
import re
import sys
from typing import Callable, Optional, Sequence

from absl import app
from absl import flags
import gin

GIN_CONFIGS_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    'gin_configs')

flags.DEFINE_multi_string('gin_file', [], 'Gin config files, parsed in order.')
flags.DEFINE_multi_string('gin_bindings', [],
                          "Individual bindings, e.g. 'TRAIN_STEPS = 100'.")
flags.DEFINE_list('gin_search_paths', ['.'],
                  'Directories searched for gin files and their includes '
                  f'(besides {GIN_CONFIGS_DIR}).')

_SHORTHAND = re.compile(r'^--gin\.([^=]+)=(.*)$', re.DOTALL)


class GinConfigError(ValueError):
  """A gin file or binding does not fit the code."""


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
  """`--gin.TRAIN_STEPS=10` -> `--gin_bindings=TRAIN_STEPS = 10`."""
  out = []
  for arg in argv:
    match = _SHORTHAND.match(arg)
    out.append(f'--gin_bindings={match.group(1)} = {match.group(2)}'
               if match else arg)
  return out


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str] = (),
              search_paths: Sequence[str] = ('.',)) -> None:
  """Parses files then bindings; unknown names raise GinConfigError."""
  if not gin_files:
    raise GinConfigError('No --gin_file given: pass a model file and a run file, '
                         'e.g. --gin_file=sizes/tiny.gin '
                         '--gin_file=runs/pretrain.gin.')
  for path in [GIN_CONFIGS_DIR, *search_paths]:
    gin.add_config_file_search_path(os.path.abspath(path))
  gin.clear_config()
  root_logger = logging.getLogger()
  root_logger.addFilter(_quiet_search_misses)
  try:
    gin.parse_config_files_and_bindings(list(gin_files), list(gin_bindings),
                                        finalize_config=False, skip_unknown=False)
  except (ValueError, KeyError, IOError) as e:
    raise GinConfigError(
        f'Gin configuration rejected: {e}\nCheck the spelling of the name in '
        'your --gin_file/--gin.X bindings against the configurables fovea_jax '
        f'registers; gin files are searched in {GIN_CONFIGS_DIR} and '
        f'{list(search_paths)}.') from e
  finally:
    root_logger.removeFilter(_quiet_search_misses)


def _quiet_search_misses(record: logging.LogRecord) -> bool:
  """gin logs an ERROR for every search path a file is *not* in; drop those."""
  return not str(record.msg).startswith('Path not found')


def run(main: Callable[[], None], argv: Optional[Sequence[str]] = None) -> None:
  """absl app.run with T5X's gin flags, then `main()` under the parsed config."""

  def _main(_):
    parse_gin(flags.FLAGS.gin_file, flags.FLAGS.gin_bindings,
              flags.FLAGS.gin_search_paths)
    main()

  app.run(_main, argv=rewrite_gin_args(sys.argv if argv is None else argv))

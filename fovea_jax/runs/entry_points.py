"""What `python -m fovea_jax.{train,eval,infer,export}` share.

Joins a multi-process run if the environment describes one, registers the seqio
tasks, parses the gin flags (the gin files import and so register everything
they configure), then calls the named configurable with everything from gin.
"""
import logging
import os

from fovea_jax.runs import compilation_cache
from fovea_jax.runs import distributed


def _register_configurables() -> dict:
  """The runnable functions. Everything else a gin file names is registered by
  that file's own `from fovea_jax... import module` lines (T5X's convention)."""
  # pylint: disable=g-import-not-at-top,unused-import
  import fovea_jax.tasks  # Registers the seqio tasks.
  from fovea_jax.runs import eval_lib
  from fovea_jax.runs import export_lib
  from fovea_jax.runs import infer_lib
  from fovea_jax.runs import train_lib
  return {'train': train_lib.train, 'evaluate': eval_lib.evaluate,
          'infer': infer_lib.infer, 'export': export_lib.export}


def _own_or_important(record: logging.LogRecord) -> bool:
  return (record.levelno >= logging.WARNING or
          f'{os.sep}fovea_jax{os.sep}' in record.pathname)


def show_own_info_logs() -> None:
  """INFO lines from fovea_jax; only warnings and errors from libraries (orbax
  alone writes a dozen INFO lines per checkpoint)."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  logging.getLogger().setLevel(logging.INFO)
  handler = absl_logging.get_absl_handler()
  if _own_or_important not in handler.filters:
    handler.addFilter(_own_or_important)


def run_configured(name: str, gin_files, gin_bindings=(), search_paths=()):
  """Parses gin like the command line does, then runs `name` in-process."""
  from fovea_jax.runs import gin_utils  # pylint: disable=g-import-not-at-top
  functions = _register_configurables()
  gin_utils.parse_gin(list(gin_files), list(gin_bindings), search_paths)
  compilation_cache.configure()
  return functions[name]()


def user_errors() -> dict:
  """`{error class: its kind}` for the errors a run reports as one line
  instead of a traceback: each names the input that is wrong and the fix."""
  # pylint: disable=g-import-not-at-top
  from fovea_jax.data.errors import DataError
  from fovea_jax.training.checkpoints import CheckpointError
  from fovea_jax.training.fingerprint import ModelMismatchError
  from fovea_jax.training.model_inputs import ModelInputError
  from fovea_jax.training.train_loop import DivergenceError
  return {DataError: 'data error', CheckpointError: 'checkpoint error',
          ModelMismatchError: 'model mismatch',
          ModelInputError: 'inputs the model cannot serve',
          DivergenceError: 'training diverged'}


def _error_kind(error: Exception) -> str:
  return next(kind for cls, kind in user_errors().items()
              if isinstance(error, cls))


def _message(error: Exception) -> str:
  # gin appends "In call to configurable ..." lines to the exception it passes
  # through; the program's name already says which function ran.
  message = getattr(error, 'message', None) or str(error)
  return '\n'.join(line for line in message.splitlines()
                   if not line.strip().startswith('In call to configurable'))


def main(name: str, program: str) -> None:
  """Runs configurable `name` for the command-line program `program`
  (`fovea_jax.eval`), which prefixes its one-line error messages."""
  distributed.initialize_from_env()
  from fovea_jax.runs import gin_utils  # pylint: disable=g-import-not-at-top
  functions = _register_configurables()

  def run():
    show_own_info_logs()
    compilation_cache.configure()
    try:
      result = functions[name]()
    except tuple(user_errors()) as e:
      # Each of these is fixed by changing the input (data, checkpoint, model
      # settings, learning rate), and its message says how; a traceback
      # through gin, orbax or tf.data would only bury it.
      raise SystemExit(f'{program}: {_error_kind(e)}: {_message(e)}') from None
    if name == 'train':
      logging.info('Training finished at step %d.', int(result.state.step))
    else:
      logging.info('%s finished: %s', name, result)

  gin_utils.run(run, program=program)

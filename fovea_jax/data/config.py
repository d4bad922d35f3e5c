"""`DatasetConfig`: T5X's description of an input pipeline, checked early.

The field names are T5X's (`t5x.utils.DatasetConfig`) so that gin files written
for T5X carry over:

    train/config.DatasetConfig.mixture_or_task_name = %MIXTURE_OR_TASK_NAME
    train/config.DatasetConfig.task_feature_lengths = %TASK_FEATURE_LENGTHS
"""
import dataclasses
import difflib
import importlib
from typing import Mapping, Optional

import gin

from fovea_jax.tensorflow_runtime import seqio


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  """What data to read and how to batch it (T5X's fields and defaults)."""
  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  split: str
  batch_size: int
  shuffle: bool
  seed: Optional[int]
  use_cached: bool = False
  pack: bool = False
  use_custom_packing_ops: bool = False
  module: Optional[str] = None
  trim_output_features: bool = True

  def __post_init__(self):
    check_task_feature_lengths(self.task_feature_lengths)
    if not isinstance(self.batch_size, int) or self.batch_size <= 0:
      raise ValueError(
          f'DatasetConfig.batch_size must be a positive int, got '
          f'{self.batch_size!r}.')
    if not self.mixture_or_task_name:
      raise ValueError('DatasetConfig.mixture_or_task_name is empty; set it '
                       '(gin macro MIXTURE_OR_TASK_NAME).')


def check_task_feature_lengths(task_feature_lengths) -> None:
  """Raises unless every length is a positive int (None is not allowed)."""
  if not isinstance(task_feature_lengths, Mapping) or not task_feature_lengths:
    raise ValueError(
        'TASK_FEATURE_LENGTHS must be a non-empty mapping such as '
        f"{{'inputs': 4096, 'targets': 512}}, got {task_feature_lengths!r}.")
  for feature, length in task_feature_lengths.items():
    # bool is an int subclass; True is never a meant length.
    if (not isinstance(length, int) or isinstance(length, bool) or
        length <= 0):
      raise ValueError(
          f'TASK_FEATURE_LENGTHS[{feature!r}] must be a positive int, got '
          f'{length!r}.')


def get_mixture_or_task(name: str, module: Optional[str] = None):
  """The registered seqio task or mixture `name`, importing `module` first.

  An unknown name raises a ValueError that names it and lists close matches
  (or, when none is close, every registered name).
  """
  if module:
    try:
      importlib.import_module(module)
    except ModuleNotFoundError as e:
      raise ValueError(
          f'DatasetConfig.module {module!r} (imported to register tasks) '
          f'cannot be imported: {e}. Use e.g. module=\'fovea_jax.tasks\'.'
      ) from e
  registered = sorted(set(seqio.TaskRegistry.names()) |
                      set(seqio.MixtureRegistry.names()))
  if name not in registered:
    close = difflib.get_close_matches(name, registered, n=5, cutoff=0.5)
    hint = (f'Close matches: {", ".join(close)}.' if close else
            f'Registered: {", ".join(registered) or "none"}.')
    if not module:
      hint += (" No DatasetConfig.module was given: use "
               "module='fovea_jax.tasks' to register fovea_jax's tasks.")
    raise ValueError(f'No seqio task or mixture named {name!r}. {hint}')
  return seqio.get_mixture_or_task(name)

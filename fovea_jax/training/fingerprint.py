"""Which model a checkpoint belongs to: a fingerprint of the built network.

Computed from the Flax module itself (its dataclass fields, recursively: the
architecture, its sizes, the attention scheme and every option of it), never
from gin text, so one model spelled by different gin files has one fingerprint,
wherever the options are configured. Every checkpoint's meta carries it;
resume, warm start, eval, infer and export compare it with the model they build.

Fields that change how the same function is computed, not which function,
are left out: dropout (off at inference), the activation dtype and the
attention backend. Evaluating a bfloat16-trained checkpoint in float32 on
another backend is the same model.
"""
import dataclasses
import enum
import functools
import inspect
from typing import Any, Mapping

import numpy as np

# Field names that never enter a fingerprint (see above); `parent` and `name`
# are Flax's module bookkeeping.
COMPUTE_ONLY_FIELDS = frozenset(
    {'dropout_rate', 'dtype', 'implementation', 'parent', 'name'})
ROOT = 'architecture'


class ModelMismatchError(ValueError):
  """A checkpoint was written for a different model than the one built now."""


def fingerprint(model: Any) -> dict[str, Any]:
  """`{'architecture': 'EncoderDecoder', 'config.num_heads': 4,
  'config.attention': 'fovea', 'config.attention.block_len': 64, ...}`: the
  network of a model wrapper (`model.module`) or a bare Flax module."""
  out: dict[str, Any] = {}
  _describe(getattr(model, 'module', model), '', out)
  return out


def _type_name(value) -> str:
  # Attention schemes register a short name ('fovea'); others use the class.
  return str(getattr(value, 'scheme_name', None) or type(value).__name__)


def _callable_name(value) -> str:
  return f'{getattr(value, "__module__", "")}.{getattr(value, "__qualname__", value)}'


def _describe(value, path: str, out: dict) -> None:
  key = path or ROOT
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    out[key] = _type_name(value)
    for field in dataclasses.fields(value):
      if field.name not in COMPUTE_ONLY_FIELDS:
        _describe(_resolved(value, field.name), _join(path, field.name), out)
  elif isinstance(value, functools.partial):
    out[key] = _callable_name(value.func)
    for name, arg in sorted(value.keywords.items()):
      if name not in COMPUTE_ONLY_FIELDS:
        _describe(arg, _join(path, name), out)
    for i, arg in enumerate(value.args):
      _describe(arg, _join(path, str(i)), out)
  elif isinstance(value, Mapping):
    for name in sorted(value, key=str):
      _describe(value[name], _join(path, str(name)), out)
  elif isinstance(value, (list, tuple)):
    if all(isinstance(v, (bool, int, float, str, type(None))) for v in value):
      out[key] = list(value)
    else:
      for i, item in enumerate(value):
        _describe(item, _join(path, str(i)), out)
  elif isinstance(value, enum.Enum):
    out[key] = f'{type(value).__name__}.{value.name}'
  elif isinstance(value, (bool, int, float, str, type(None))):
    out[key] = value
  elif isinstance(value, (np.generic, np.dtype)):
    out[key] = str(value)
  elif inspect.isclass(value) or callable(value):
    # A class, function or initializer: its name (closures' options are not
    # visible, and their repr holds memory addresses).
    out[key] = _callable_name(value)
  else:
    out[key] = type(value).__name__


def _resolved(owner, name: str):
  """The field's value, with the network config's `attention` (a scheme name
  or a configured scheme) resolved to its scheme instance, so 'fovea' and
  `@fovea.Fovea()` with default options are one model."""
  if name == 'attention' and hasattr(owner, 'scheme'):
    return owner.scheme
  return getattr(owner, name)


def _join(path: str, name: str) -> str:
  return f'{path}.{name}' if path else name


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]
                ) -> list[str]:
  """`'field: checkpoint X, this model Y'` for every field that differs."""
  lines = []
  for key in sorted(set(saved) | set(current)):
    a, b = saved.get(key, '(absent)'), current.get(key, '(absent)')
    if a != b:
      lines.append(f'{key}: checkpoint {a!r}, this model {b!r}')
  return lines


def check(saved: Any, current: Mapping[str, Any], checkpoint: str,
          allow_mismatch: bool, override: str) -> list[str]:
  """Raises ModelMismatchError naming the differing fields, unless
  `allow_mismatch`; returns the differences. `override` is the flag that
  allows it, for the message. A checkpoint without a fingerprint (written
  before fingerprints, or imported) is not compared."""
  if not saved:
    return []
  diff = differences(saved, current)
  if diff and not allow_mismatch:
    raise ModelMismatchError(
        f'{checkpoint} was written for a different model than the one built '
        'from this configuration; differing fields: ' + '; '.join(diff) +
        '. Build the model with the gin files it was trained with (its '
        'config.gin in the checkpoint meta and the model dir), or, to load '
        f'these weights into this model on purpose, set {override}.')
  return diff

"""The engines that run a TreeLayout, and the choice of implementation.

A new engine (e.g. another kernel family) is a new `TREE_ENGINES` entry; the
backend's default implementation is chosen here and nowhere else. Engines are
imported lazily so that CPU users never load GPU-only code. (Attention schemes
are registered by their modules in fovea_jax.layers.schemes.)
"""
from __future__ import annotations

import importlib
from typing import Callable

import jax

from fovea_jax.attention import common

# implementation name -> 'module:function' running a TreeLayout over a flat buffer.
TREE_ENGINES = {
    'xla': 'fovea_jax.attention.tree_attention_xla:tree_level_attention_xla',
    'pallas': 'fovea_jax.attention.pallas:tree_level_attention_pallas',
}


def _load(path):
  module, function = path.split(':')
  return getattr(importlib.import_module(module), function)


def pallas_available() -> bool:
  try:
    _load(TREE_ENGINES['pallas'])
  except ImportError:
    return False
  return True


def default_implementation() -> str:
  """Pallas kernels on GPU/TPU, the XLA gather path elsewhere."""
  if jax.default_backend() in ('gpu', 'tpu') and pallas_available():
    return 'pallas'
  return 'xla'


def resolve_implementation(implementation) -> str:
  if implementation is None:
    return default_implementation()
  return common.check_choice('implementation', implementation,
                             common.IMPLEMENTATIONS)


def tree_engine(implementation) -> Callable:
  """The function running a TreeLayout for 'xla' or 'pallas'."""
  try:
    return _load(TREE_ENGINES[implementation])
  except ImportError as error:
    raise ValueError(f'implementation={implementation!r} is not available here '
                     f'({error}); use implementation="xla".') from error

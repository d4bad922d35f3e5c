"""Attention schemes: one module per scheme, its fields the scheme's options.

The one registry of schemes. Every `base.Scheme` subclass defined in a module of
this package is exposed here by its class name (gin files name
`schemes.Fovea` or `fovea.Fovea`) and in `BY_NAME` by its `scheme_name`; the
benchmarks and studies take their scheme lists from `BY_NAME` and each scheme's
cost from its own methods, so a new scheme is one new file here plus one
`gin_configs/attention/*.gin` file. `get_scheme` turns `network.Config.attention`
(a configured instance or a scheme name) into an instance.
"""
import importlib
import pkgutil

from fovea_jax.layers.schemes import base
from fovea_jax.layers.schemes.base import Scheme


def _collect() -> dict:
  """{class name: class} of every Scheme subclass defined in this package."""
  found = {}
  for info in pkgutil.iter_modules(__path__):
    module = importlib.import_module(f'{__name__}.{info.name}')
    for value in vars(module).values():
      if (isinstance(value, type) and issubclass(value, Scheme) and
          value is not Scheme and value.__module__ == module.__name__):
        found[value.__name__] = value
  return found


_CLASSES = _collect()
globals().update(_CLASSES)
BY_NAME = {cls.scheme_name: cls for cls in _CLASSES.values()}


def get_scheme(scheme) -> Scheme:
  """A scheme instance from an instance or a scheme name (default options)."""
  if isinstance(scheme, str):
    if scheme not in BY_NAME:
      raise ValueError(f'unknown attention scheme {scheme!r}; known: '
                       f'{sorted(BY_NAME)} (or a configured instance such as '
                       '@fovea.Fovea()).')
    return BY_NAME[scheme]()
  if not isinstance(scheme, Scheme):
    raise ValueError(f'attention scheme must be a name in {sorted(BY_NAME)} or an '
                     f'instance of a fovea_jax.layers.schemes class, got {scheme!r}.')
  return scheme


__all__ = ['Scheme', 'BY_NAME', 'get_scheme', 'base', *sorted(_CLASSES)]

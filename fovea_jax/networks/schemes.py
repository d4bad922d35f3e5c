"""Attention schemes by name: the registry that picks each layer's attention.

A scheme spec is a small frozen dataclass (gin-configurable) whose
`layer_factory(layer_index, num_layers, causal)` returns the Flax module factory
that `MultiHeadAttention` runs between its projections. Adding a scheme is one new
spec class plus `@register('name')`; nothing else branches on scheme names.

Gin: `network.Config.attention = @schemes.Fovea()` and `schemes.Fovea.block_len =
128`, or simply `network.Config.attention = 'fovea'` for the defaults.
"""
import dataclasses
import functools
from typing import Callable, Optional, Sequence, Union

import gin

from fovea_jax.layers.schemes.dense import DenseScheme
from fovea_jax.layers.schemes.fma import FmaScheme
from fovea_jax.layers.schemes.fovea import FoveaScheme
from fovea_jax.layers.schemes.local import LocalScheme
from fovea_jax.layers.schemes.transient_global import TransientGlobalScheme

SCHEMES: dict = {}


def register(name: str):
  """Class decorator: makes the spec reachable by `name` and from gin."""
  def wrap(cls):
    if name in SCHEMES:
      raise ValueError(f'attention scheme {name!r} is registered twice.')
    cls.scheme_name = name
    SCHEMES[name] = cls
    return gin.configurable(cls, module='schemes')
  return wrap


def get_scheme(scheme) -> 'SchemeSpec':
  """A spec instance from a spec or a registered name (with default options)."""
  if isinstance(scheme, str):
    if scheme not in SCHEMES:
      raise ValueError(f'unknown attention scheme {scheme!r}; registered: '
                       f'{sorted(SCHEMES)}.')
    return SCHEMES[scheme]()
  if not hasattr(scheme, 'layer_factory'):
    raise ValueError(f'attention scheme must be a name in {sorted(SCHEMES)} or a '
                     f'spec instance, got {scheme!r}.')
  return scheme


class SchemeSpec:
  """Base of every spec: same module on every layer unless overridden."""
  scheme_name = 'abstract'
  # LongT5 transient-global needs a second relative-position table per stack.
  uses_side_bias = False

  def module_factory(self, causal: bool) -> Callable:
    raise NotImplementedError(type(self).__name__)

  def layer_factory(self, layer_index: int, num_layers: int,
                    causal: bool) -> Callable:
    del layer_index, num_layers
    return self.module_factory(causal)


@register('dense')
@dataclasses.dataclass(frozen=True)
class Dense(SchemeSpec):
  """Full softmax attention; the only scheme that separates packed examples."""

  def module_factory(self, causal):
    return functools.partial(DenseScheme, causal=causal)


@register('longt5_local')
@dataclasses.dataclass(frozen=True)
class LongT5Local(SchemeSpec):
  """LongT5 local: every token sees |i - j| <= local_radius (LongT5: 127)."""
  local_radius: int = 127

  def module_factory(self, causal):
    return functools.partial(LocalScheme, window=self.local_radius, causal=causal)


@register('longt5_tglobal')
@dataclasses.dataclass(frozen=True)
class LongT5TransientGlobal(SchemeSpec):
  """LongT5 TGlobal: local window plus one global token per 16-token group."""
  local_radius: int = 127
  global_block_size: int = 16
  uses_side_bias = True

  def module_factory(self, causal):
    return functools.partial(TransientGlobalScheme,
                             local_radius=self.local_radius,
                             global_block_size=self.global_block_size,
                             causal=causal)


@register('fovea')
@dataclasses.dataclass(frozen=True)
class Fovea(SchemeSpec):
  """Fovea attention (He et al. 2023); paper: block_len 128, wing 1."""
  block_len: int = 128
  wing: int = 1
  edge: str = 'clip'
  coarse_weight: str = 'once'
  max_level: Optional[int] = None

  def module_factory(self, causal):
    return functools.partial(FoveaScheme, block_len=self.block_len, wing=self.wing,
                             edge=self.edge, coarse_weight=self.coarse_weight,
                             max_level=self.max_level, causal=causal)


@register('fma')
@dataclasses.dataclass(frozen=True)
class Fma(SchemeSpec):
  """Fast Multipole Attention; grouped_conv learns filters up to `max_length`."""
  fine_len: int = 128
  rank: int = 16
  downsample: str = 'avg'
  max_length: int = 16384

  def module_factory(self, causal):
    return functools.partial(FmaScheme, fine_len=self.fine_len, rank=self.rank,
                             downsample=self.downsample,
                             max_length=self.max_length, causal=causal)


@register('masformer')
@dataclasses.dataclass(frozen=True)
class MASFormer(SchemeSpec):
  """Dense attention on `full_layers` (default: the bottom `num_full`), local else.

  local: 'sliding' (|i - j| <= window) or 'block' (same block of block_len).
  """
  num_full: int = 4
  full_layers: Optional[Sequence[int]] = None
  local: str = 'sliding'
  window: int = 256
  block_len: int = 256

  def __post_init__(self):
    if self.full_layers is not None:  # gin may give a list; specs stay hashable
      object.__setattr__(self, 'full_layers', tuple(self.full_layers))

  def dense_layers(self, num_layers: int) -> tuple:
    if self.full_layers is not None:
      bad = [i for i in self.full_layers if not 0 <= i < num_layers]
      if bad:
        raise ValueError(f'MASFormer full_layers {bad} are outside the '
                         f'{num_layers} layers of this stack.')
      return tuple(sorted(self.full_layers))
    return tuple(range(min(self.num_full, num_layers)))

  def layer_factory(self, layer_index, num_layers, causal):
    if layer_index in self.dense_layers(num_layers):
      return Dense().module_factory(causal)
    local_options = {'sliding': dict(window=self.window),
                     'block': dict(block_len=self.block_len)}
    if self.local not in local_options:
      raise ValueError(f"MASFormer local must be 'sliding' or 'block', got "
                       f'{self.local!r}.')
    return functools.partial(LocalScheme, causal=causal,
                             **local_options[self.local])


SchemeLike = Union[str, SchemeSpec]

"""MASFormer: dense attention in a few layers, local attention in the rest.

The schedule is the scheme: each layer gets the `Dense` or `Local` module
(docs/attention.md, MASFormer). A schedule that makes every layer dense is an
error, since it would silently train a dense model under MASFormer's name.
"""
import functools
from typing import Optional, Sequence

import flax.linen as nn
import gin

from fovea_jax.layers.schemes import base
from fovea_jax.layers.schemes.dense import Dense
from fovea_jax.layers.schemes.local import Local


@gin.configurable
class MASFormer(base.Scheme):
  """Dense on `full_layers` (default: the bottom `num_full`), local elsewhere.

  local: 'sliding' (|i - j| <= window) or 'block' (same block of block_len).
  """
  scheme_name = 'masformer'
  schedule = True
  num_full: int = 4
  full_layers: Optional[Sequence[int]] = None
  local: str = 'sliding'
  window: int = 256
  block_len: int = 256

  def __post_init__(self):
    if self.full_layers is not None:  # gin may give a list; modules stay hashable
      object.__setattr__(self, 'full_layers', tuple(self.full_layers))
    super().__post_init__()

  @nn.nowrap
  def dense_layers(self, num_layers: int) -> tuple:
    """The layers that run dense attention in a stack of `num_layers`."""
    if self.full_layers is not None:
      bad = [i for i in self.full_layers if not 0 <= i < num_layers]
      if bad:
        raise ValueError(f'masformer.MASFormer.full_layers {bad} are outside the '
                         f'{num_layers} layers of this stack (0..{num_layers - 1}).')
      dense = tuple(sorted(set(self.full_layers)))
      option = f'full_layers={list(dense)}'
    else:
      if not isinstance(self.num_full, int) or self.num_full < 0:
        raise ValueError('masformer.MASFormer.num_full must be an integer >= 0, '
                         f'got {self.num_full!r}.')
      dense = tuple(range(min(self.num_full, num_layers)))
      option = f'num_full={self.num_full}'
    if len(dense) >= num_layers:
      raise ValueError(
          f'masformer.MASFormer.{option} makes all {num_layers} layers of this '
          'stack dense, so no layer would be local: set masformer.MASFormer.num_full '
          f'below {num_layers} (or fewer full_layers), or use attention/dense.gin '
          'for a dense model.')
    return dense

  @nn.nowrap
  def for_layer(self, layer_index, num_layers, causal):
    if self.local not in ('sliding', 'block'):
      raise ValueError("masformer.MASFormer.local must be 'sliding' or 'block', got "
                       f'{self.local!r}.')
    if layer_index in self.dense_layers(num_layers):
      return functools.partial(Dense, causal=causal)
    if self.local == 'sliding':
      return functools.partial(Local, window=self.window, block_len=None,
                               causal=causal)
    return functools.partial(Local, window=None, block_len=self.block_len,
                             causal=causal)

  @nn.nowrap
  def attended_pairs(self, length, causal):
    raise NotImplementedError(
        'masformer.MASFormer is a schedule: its layers cost differently; ask '
        'stack_pairs(num_layers, length, causal), or the module of one layer '
        '(for_layer(...)()) for its attended_pairs.')

  def __call__(self, *args, **kwargs):
    raise TypeError('masformer.MASFormer is a schedule, not a layer: a stack runs '
                    'the module that MASFormer.for_layer(...) returns.')

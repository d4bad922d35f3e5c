"""DenseGeneral without bias: contracts chosen input axes against a kernel."""
from typing import Any, Callable, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen import partitioning as nn_partitioning

from fovea_jax.layers import initializers


def _as_tuple(x) -> tuple:
  return tuple(x) if isinstance(x, (list, tuple)) else (x,)


class DenseGeneral(nn.Module):
  """y = x @ W over `axis`, producing `features` (int or tuple) trailing dims.

  `kernel_axes` names every kernel dimension (contracted input dims first, then
  features). The default init is T5's fan-in variance scaling over the contracted
  dims.
  """
  features: Union[int, Sequence[int]]
  kernel_axes: Sequence[str]
  axis: Union[int, Sequence[int]] = -1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable | None = None

  @nn.compact
  def __call__(self, inputs):
    features = _as_tuple(self.features)
    axis = tuple(a % inputs.ndim for a in _as_tuple(self.axis))
    kernel_shape = tuple(inputs.shape[a] for a in axis) + features
    if len(self.kernel_axes) != len(kernel_shape):
      raise ValueError(
          f'DenseGeneral kernel has {len(kernel_shape)} dims {kernel_shape} but '
          f'kernel_axes names {len(self.kernel_axes)}: {tuple(self.kernel_axes)}; '
          'give one logical axis name per kernel dimension.')
    init = self.kernel_init or initializers.t5_kernel_init(
        1.0, tuple(range(len(axis))))
    kernel = nn_partitioning.param_with_axes(
        'kernel', init, kernel_shape, self.param_dtype,
        axes=tuple(self.kernel_axes))
    kernel = jnp.asarray(kernel, self.dtype)
    inputs = jnp.asarray(inputs, self.dtype)
    if axis == tuple(range(inputs.ndim - len(axis), inputs.ndim)):
      # Trailing axes: one 2-D product. XLA's CPU backend runs it faster than
      # the same dot_general with several free dims (a T5 gated MLP, 4k tokens,
      # forward+backward: 71 ms against 82 ms), and it is the same math.
      lead = inputs.shape[:inputs.ndim - len(axis)]
      size = lambda dims: int(np.prod(dims, dtype=np.int64))
      flat = inputs.reshape(size(lead), size(kernel_shape[:len(axis)]))
      out = flat @ kernel.reshape(flat.shape[1], size(features))
      return out.reshape(lead + features)
    contract = (axis, tuple(range(len(axis))))
    return jax.lax.dot_general(inputs, kernel, (contract, ((), ())))

"""T5.1.1 gated-GELU MLP: wo(gelu(wi_0 x) * wi_1 x), dropout after the gate."""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from fovea_jax.layers.dense import DenseGeneral
from fovea_jax.layers.sharding import MLP_AXES, constrain_activations
from fovea_jax.sharding import axis_names as ax

_ACTIVATIONS = {
    'gelu': lambda x: nn.gelu(x, approximate=True),  # T5.1.1's gelu_new
    'relu': nn.relu,
    'linear': lambda x: x,
}


class MlpBlock(nn.Module):
  """One `wi_<i>` projection per activation, multiplied together, then `wo`.

  ('gelu', 'linear') is T5.1.1's gated GELU; ('relu',) is original T5.
  """
  intermediate_dim: int
  activations: Sequence[str] = ('gelu', 'linear')
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs, deterministic: bool = True):
    unknown = [a for a in self.activations if a not in _ACTIVATIONS]
    if unknown:
      raise ValueError(f'Unknown MLP activations {unknown}; choose from '
                       f'{sorted(_ACTIVATIONS)}.')
    hidden = None
    for i, name in enumerate(self.activations):
      suffix = f'_{i}' if len(self.activations) > 1 else ''
      x = DenseGeneral(self.intermediate_dim, kernel_axes=(ax.EMBED, ax.MLP),
                       dtype=self.dtype, name=f'wi{suffix}')(inputs)
      x = _ACTIVATIONS[name](x)
      hidden = x if hidden is None else hidden * x
    hidden = constrain_activations(hidden, MLP_AXES)
    hidden = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(
        hidden, deterministic=deterministic)
    return DenseGeneral(inputs.shape[-1], kernel_axes=(ax.MLP, ax.EMBED),
                        dtype=self.dtype, name='wo')(hidden)

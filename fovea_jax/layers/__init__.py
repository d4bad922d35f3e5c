"""T5.1.1 / LongT5 building blocks (Flax Linen), every param with logical axes.

The layers here know nothing about which attention scheme runs inside them: the
scheme (a `fovea_jax.layers.schemes` module, configured by gin through
`network.Config.attention`) hands `MultiHeadAttention` a module factory.
"""
from fovea_jax.layers.attention_layer import MultiHeadAttention
from fovea_jax.layers.dense import DenseGeneral
from fovea_jax.layers.embedding import Embed
from fovea_jax.layers.mlp import MlpBlock
from fovea_jax.layers.normalization import RMSNorm
from fovea_jax.layers.relative_position import RelativePositionBiasTable
from fovea_jax.layers.sharding import constrain_activations

__all__ = [
    'DenseGeneral',
    'Embed',
    'MlpBlock',
    'MultiHeadAttention',
    'RMSNorm',
    'RelativePositionBiasTable',
    'constrain_activations',
]

"""fovea_jax.attention: the attention functions of docs/attention.md.

Public functions take `[batch, length, heads, head_dim]` arrays; each scheme has a
dense oracle (`implementation='reference'`), an XLA path and a Pallas path.
"""
from fovea_jax.attention.api import dot_product_attention
from fovea_jax.attention.api import fma_attention
from fovea_jax.attention.api import fovea_attention
from fovea_jax.attention.api import local_attention
from fovea_jax.attention.api import run_tree_layout
from fovea_jax.attention.common import RelativePositionBias
from fovea_jax.attention.common import relative_position_bucket
from fovea_jax.attention.engines import default_implementation
from fovea_jax.attention.fma import FmaLevel
from fovea_jax.attention.fma import fma_layout
from fovea_jax.attention.fma import fma_levels
from fovea_jax.attention.fma import fma_padded_length
from fovea_jax.attention.fovea import average_unseen_blocks
from fovea_jax.attention.fovea import fovea_layout
from fovea_jax.attention.fovea import fovea_level_map
from fovea_jax.attention.layout import TreeLayout
from fovea_jax.attention.local import local_layout

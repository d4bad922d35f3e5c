"""Pallas kernels of tree-level block attention (GPU Triton, TPU Mosaic, interpret).

`TREE_ENGINES['pallas']` in `attention.engines` points here.
"""
from fovea_jax.attention.pallas.tree_attention import BlockSizes
from fovea_jax.attention.pallas.tree_attention import tree_level_attention_pallas
from fovea_jax.attention.pallas.tree_attention import tree_level_attention_reference

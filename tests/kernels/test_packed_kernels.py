"""Packed examples on the Pallas kernels: both lowerings, interpreted on CPU,
against the XLA engine over packed flat buffers."""
import functools

import jax.numpy as jnp
import pytest

from fovea_jax import attention
from fovea_jax.attention import dense
from fovea_jax.attention import pyramid
from fovea_jax.attention import tree_attention_xla
from fovea_jax.attention.pallas import tree_attention as kernel
from jax.experimental.pallas import tpu as pltpu
from tests.attention import helpers
from tests.attention.packed_inputs import LENGTH, SEGMENT_IDS

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow


# Packed layouts on the Pallas kernels (interpret mode on CPU): causal and
# bidirectional pooled levels (with head copies), a sliding window, and
# flash-style dense.
PALLAS_LAYOUTS = {
    'fovea causal': lambda: attention.fovea_layout(LENGTH, block_len=4,
                                                   causal=True, packed=True),
    'fovea bidirectional': lambda: attention.fovea_layout(LENGTH, block_len=4,
                                                          packed=True),
    'fma bidirectional': lambda: attention.fma_layout(LENGTH, fine_len=4,
                                                      rank=2, packed=True),
    'sliding causal': lambda: attention.local_layout(LENGTH, window=5,
                                                     causal=True),
    'dense causal': lambda: dense.flash_layout(LENGTH, causal=True,
                                               query_block=8),
}


# Interpreted kernels are slow on CPU (Mosaic's interpreter most: a fovea
# layout takes it minutes): the trees and dense on Triton's lowering, a
# sliding window on Mosaic's, whose kernels share the tile math and differ in
# how the tiles, segment ids included, reach it.
PALLAS_CASES = [(name, 'gpu') for name in PALLAS_LAYOUTS
                if name != 'sliding causal'] + [('sliding causal', 'tpu')]


@pytest.mark.parametrize('name,backend', PALLAS_CASES)
def test_packed_pallas_kernels_equal_the_xla_engine(name, backend):
  """Both kernel lowerings (Triton's and Mosaic's, interpreted) over a packed
  flat buffer: forward and gradients (q, k_flat, v_flat, bias table) equal
  the XLA engine's (which the tests above hold to the oracle), float32
  `helpers` tolerances; tiles of 8 so that segments, query tiles and key
  tiles all cut one another."""
  layout = PALLAS_LAYOUTS[name]()
  q, k, v, _, pb = helpers.random_inputs(4, length=LENGTH, heads=4, kv_heads=2,
                                         head_dim=16,
                                         bidirectional=not layout.causal)
  ids = jnp.asarray(SEGMENT_IDS)
  k_flat, v_flat, entry_bias = pyramid.build_flat_kv(layout, k, v, ids > 0,
                                                     segment_ids=ids)
  segment_ids = (ids, pyramid.flat_segment_ids(layout, ids))
  keep = (ids > 0)[:, :, None, None]
  pallas = functools.partial(
      kernel.tree_level_attention_pallas,
      block_sizes=kernel.BlockSizes(block_q=8, block_k=8, block_k_dkv=8),
      interpret=pltpu.InterpretParams() if backend == 'tpu' else True,
      backend=backend)

  def run(engine):
    return lambda q, k_flat, v_flat, pb: jnp.where(keep, engine(
        q, k_flat, v_flat, entry_bias, layout, scale=0.3, position_bias=pb,
        segment_ids=segment_ids), 0.0)

  helpers.assert_same(run(tree_attention_xla.tree_level_attention_xla),
                      run(pallas), q, k_flat, v_flat, pb)

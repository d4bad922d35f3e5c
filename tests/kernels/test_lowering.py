"""The kernels lower for GPU (Triton) and TPU (Mosaic) on this CPU-only jaxlib.

`jax.jit(...).trace(...).lower(lowering_platforms=...)` runs the Pallas lowering
for a platform without its hardware: for 'cuda' the kernels become Triton IR
(`__gpu$xla.gpu.triton` custom calls), for 'tpu' Mosaic IR (`tpu_custom_call`),
which needs the TPU generation from an abstract mesh's device. What this cannot
check: Triton's and Mosaic's own compilers (ptxas, libtpu) run only on the device.
"""
import functools

import jax
import jax.numpy as jnp
import pytest

from fovea_jax import attention
from fovea_jax.attention import dense
from fovea_jax.attention import pyramid
from fovea_jax.attention.pallas import tile_tables
from fovea_jax.attention.pallas import tpu_kernels
from fovea_jax.attention.pallas import tree_attention as kernel

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

CUSTOM_CALL = {'cuda': '__gpu$xla.gpu.triton', 'tpu': 'tpu_custom_call'}
BACKEND = {'cuda': 'gpu', 'tpu': 'tpu'}
LENGTH = 256

LAYOUTS = {
    'fovea_causal': lambda: attention.fovea_layout(LENGTH, block_len=64,
                                                   causal=True),
    'fma_learned': lambda: attention.fma_layout(LENGTH, fine_len=32, rank=8,
                                                downsample='grouped_conv'),
    'sliding': lambda: attention.local_layout(LENGTH, window=32),
    'dense': lambda: dense.flash_layout(LENGTH, causal=False),
}


def _grad_program(layout, backend, bias):
  """dq, dk, dv (and d table) of a loss through pooling and the kernels."""
  def loss(q, k, v, table):
    k_flat, v_flat, entry_bias = pyramid.build_flat_kv(
        layout, k, v, jnp.ones(k.shape[:2], bool))
    position_bias = attention.RelativePositionBias(table) if bias else None
    out = kernel.tree_level_attention_pallas(
        q, k_flat, v_flat, entry_bias, layout, scale=0.125,
        position_bias=position_bias, interpret=False, backend=backend)
    return jnp.sum(out.astype(jnp.float32))
  return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))


def _tpu_mesh():
  # Mosaic asks the device for its TPU generation; an abstract one stands in.
  device = jax.sharding.AbstractDevice('TPU v5 lite', 1, 'tpu')
  return jax.sharding.use_abstract_mesh(
      jax.sharding.AbstractMesh((1,), ('x',), abstract_device=device))


def _lower(program, platform, *args):
  if platform != 'tpu':
    return program.trace(*args).lower(lowering_platforms=(platform,)).as_text()
  with _tpu_mesh():
    return program.trace(*args).lower(lowering_platforms=(platform,)).as_text()


@pytest.mark.parametrize('platform', sorted(CUSTOM_CALL))
@pytest.mark.parametrize('name,dtype,head_dim,kv_heads', [
    ('fovea_causal', jnp.bfloat16, 64, 4),
    ('fma_learned', jnp.bfloat16, 128, 2),
    ('sliding', jnp.float32, 64, 4),
    ('dense', jnp.bfloat16, 128, 1),
])
def test_forward_and_backward_kernels_lower(platform, name, dtype, head_dim,
                                            kv_heads):
  layout = LAYOUTS[name]()
  heads = 4
  q = jax.ShapeDtypeStruct((1, LENGTH, heads, head_dim), dtype)
  k = jax.ShapeDtypeStruct((1, LENGTH, kv_heads, head_dim), dtype)
  table = jax.ShapeDtypeStruct((32, heads), jnp.float32)
  bias = name != 'fma_learned'
  text = _lower(_grad_program(layout, BACKEND[platform], bias), platform, q, k, k,
                table)
  # forward, dq and dk/dv kernels; nothing falls back to a non-kernel path.
  assert text.count(f'custom_call @{CUSTOM_CALL[platform]}') == 3


def test_tpu_forward_exports_as_a_stable_artifact():
  # Mosaic custom calls carry compatibility guarantees, so jax.export works
  # (Triton's do not: GPU programs with Pallas kernels cannot be exported).
  layout = LAYOUTS['fovea_causal']()
  q = jax.ShapeDtypeStruct((1, LENGTH, 2, 64), jnp.bfloat16)

  def forward(q, k, v):
    k_flat, v_flat, entry_bias = pyramid.build_flat_kv(
        layout, k, v, jnp.ones(k.shape[:2], bool))
    return kernel.tree_level_attention_pallas(q, k_flat, v_flat, entry_bias,
                                              layout, scale=0.125,
                                              interpret=False, backend='tpu')

  with _tpu_mesh():
    exported = jax.export.export(jax.jit(forward), platforms=['tpu'])(q, q, q)
  assert exported.platforms == ('tpu',)
  assert exported.mlir_module().count('custom_call @tpu_custom_call') == 1


def test_tpu_kernels_lower_at_131072_tokens():
  # The TPU kernels stream K/V and q/dO tiles from HBM, so a length whose flat
  # K/V is far beyond VMEM lowers (it used to be refused). Its step lists exceed
  # one call's SMEM share, so each kernel runs as several calls.
  layout = attention.fovea_layout(1 << 17, block_len=128, causal=True)
  q = jax.ShapeDtypeStruct((1, layout.length, 2, 128), jnp.bfloat16)
  k = jax.ShapeDtypeStruct((1, layout.length, 1, 128), jnp.bfloat16)
  table = jax.ShapeDtypeStruct((32, 2), jnp.float32)
  text = _lower(_grad_program(layout, 'tpu', True), 'tpu', q, k, k, table)
  blocks = kernel.BlockSizes.get_default('tpu')
  steps = tile_tables.step_tables(tile_tables.tile_tables(
      layout, blocks.block_q, blocks.block_k, blocks.block_k_dkv, 8, 16))
  chunks = lambda owner: len(tile_tables.run_chunks(
      owner, tpu_kernels.MAX_STEPS_PER_CALL))
  calls = 2 * chunks(steps.fwd_row) + chunks(steps.dkv_tile)   # forward, dq, dk/dv
  assert calls > 3
  assert text.count('custom_call @tpu_custom_call') == calls

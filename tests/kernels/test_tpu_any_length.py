"""The TPU kernels stream tiles from HBM: VMEM does not grow with the sequence.

Before, the TPU forward and dq programs kept a whole head's flat K/V in VMEM and
the dk/dv programs a whole GQA group's q and dO, so long inputs were refused.
`resident_layout_vmem_bytes` below is that old layout's VMEM need (the formula
the kernels used to check); the tests show it outgrowing the chips' VMEM while
the streaming kernels' need stays constant, and run the streaming kernels at a
length the old layout could not hold, against the dense oracle.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from fovea_jax import attention
from fovea_jax.attention import pyramid
from fovea_jax.attention import tree_attention_xla
from fovea_jax.attention.pallas import tile_tables
from fovea_jax.attention.pallas import tpu_kernels
from fovea_jax.attention.pallas import tree_attention as kernel
import pytest

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

TPU_BLOCKS = kernel.BlockSizes.get_default('tpu')
MIB = 2**20
# VMEM per TensorCore of TPU v5p and v7x (v4: 16 MiB); the old kernels compiled
# with at most 90% of it.
SMALL_TPU_VMEM = 64 * MIB


def _round_up(x, multiple):
  return -(-x // multiple) * multiple


def resident_layout_vmem_bytes(tables, groups, padded_head_dim, itemsize):
  """VMEM of the old resident TPU layout (double-buffered, (8, 128) tiles)."""
  def tiled(rows, cols, size):
    return _round_up(rows, 8) * _round_up(cols, 128) * size
  tiles, block_k = tables.fwd_entries.shape
  forward = 2 * (2 * tiled(tables.flat_padded, padded_head_dim, itemsize) +
                 3 * tiled(tiles, block_k, 4))
  rows = tables.tiling.padded_length
  dkv = 2 * groups * (2 * tiled(rows, padded_head_dim, itemsize) +
                      2 * tiled(rows, 1, 4))
  return max(forward, dkv)


def _tpu_tables(layout):
  b = TPU_BLOCKS
  return tile_tables.tile_tables(layout, b.block_q, b.block_k, b.block_k_dkv, 8,
                                 16)


def test_vmem_stays_constant_as_the_sequence_grows():
  # head_dim 128, bf16, one kv head per query head: the yardstick.
  streamed, resident = {}, {}
  for n in (4096, 16384, 65536, 131072):
    tables = _tpu_tables(attention.fovea_layout(n, block_len=128))
    streamed[n] = tpu_kernels.tpu_vmem_bytes(tables, 1, 128, 2, 32)
    resident[n] = resident_layout_vmem_bytes(tables, 1, 128, 2)
    # Nor does SMEM: each call prefetches at most MAX_STEPS_PER_CALL steps.
    steps = tile_tables.step_tables(tables)
    for owner in (steps.fwd_row, steps.dkv_tile):
      chunks = tile_tables.run_chunks(owner, tpu_kernels.MAX_STEPS_PER_CALL)
      assert max(end - begin for begin, end in chunks) <= (
          tpu_kernels.MAX_STEPS_PER_CALL)
  assert len(set(streamed.values())) == 1
  assert streamed[131072] < 16 * MIB
  assert resident[131072] > 0.9 * 128 * MIB     # more than any v5e/v6e core has
  assert resident[131072] > 50 * streamed[131072]


def _fovea_inputs(length, head_dim):
  layout = attention.fovea_layout(length, block_len=128)
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(1, length, 1, head_dim)), jnp.float32)
             for _ in range(3))
  key_mask = jnp.asarray(rng.random((1, length)) > 0.1)
  k_flat, v_flat, entry_bias = pyramid.build_flat_kv(layout, k, v, key_mask)
  table = jnp.asarray(rng.normal(size=(8, 1)), jnp.float32)
  return layout, q, k_flat, v_flat, entry_bias, table


def test_long_input_matches_the_oracle_in_the_interpreter():
  # 16,384 tokens, float32: the old layout needed more VMEM than a v5p/v7x core
  # has (head_dim 16 costs what 128 does there: VMEM rows are 128 lanes wide).
  length, head_dim = 16384, 16
  layout, q, k_flat, v_flat, entry_bias, table = _fovea_inputs(length, head_dim)
  tables = _tpu_tables(layout)
  assert resident_layout_vmem_bytes(tables, 1, 16, 4) > 0.9 * SMALL_TPU_VMEM
  assert tpu_kernels.tpu_vmem_bytes(tables, 1, 16, 4, 8) < 2 * MIB

  # The oracle is dense over the flat buffer, so the loss reads a sample of
  # rows (in the first, an inner and the last query block); every other row
  # gets zero cotangent, which its dk/dv steps must turn into exact zeros.
  rows = np.concatenate([np.arange(0, 64), np.arange(45 * 128 + 32, 45 * 128 + 96),
                         np.arange(length - 64, length)])
  weights = jnp.asarray(np.random.default_rng(1).normal(
      size=(1, rows.size, 1, head_dim)), jnp.float32)

  def loss(engine, q, k_flat, v_flat, table, entry_bias, **options):
    pb = attention.RelativePositionBias(table, num_buckets=8, max_distance=20)
    out = engine(q, k_flat, v_flat, entry_bias, layout, scale=0.25,
                 position_bias=pb, **options)
    sampled = out if 'query_rows' in options else out[:, rows]
    return jnp.sum(sampled * weights), out

  def grads(engine, **options):
    return jax.jit(jax.value_and_grad(
        functools.partial(loss, engine, **options), argnums=(0, 1, 2, 3),
        has_aux=True))(q, k_flat, v_flat, table, entry_bias)

  # interpret=True: the TPU-formatted kernels in Pallas' generic interpreter
  # (compiled by XLA; the strict TPU interpreter checks the same kernels on a
  # short input in test_tree_attention.py).
  (_, out), got = grads(kernel.tree_level_attention_pallas, backend='tpu',
                        interpret=True, block_sizes=TPU_BLOCKS)
  (_, want_out), want = grads(kernel.tree_level_attention_reference,
                              query_rows=rows)
  tol = dict(atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(out[:, rows], want_out, **tol)
  for name, a, b in zip(('dq', 'dk', 'dv', 'dtable'), got, want):
    np.testing.assert_allclose(a, b, err_msg=name, **tol)
  assert np.any(np.asarray(got[1]))
  # Every query tile's output, not just the sampled ones: the XLA engine.
  pb = attention.RelativePositionBias(table, num_buckets=8, max_distance=20)
  xla_out = jax.jit(functools.partial(
      tree_attention_xla.tree_level_attention_xla, layout=layout, scale=0.25,
      position_bias=pb))(q, k_flat, v_flat, entry_bias)
  np.testing.assert_allclose(out, xla_out, **tol)


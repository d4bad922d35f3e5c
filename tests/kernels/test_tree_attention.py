"""Pallas tree-level attention == the dense oracles and the XLA path, fwd and grads.

`TestSchemes` goes through the public API (`implementation='pallas'`), so gradients
flow through the pooling of the flat buffer back to q, k, v, learned FMA levels and
the position-bias table. On CPU the kernels run in Pallas' interpreter; on a
GPU/TPU the same tests run them compiled. `TestEngine` calls the kernel directly
with an explicit `INTERPRET` flag; `TestEngineCompiled` repeats it compiled and is
skipped without an accelerator.
"""
import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax import attention
from fovea_jax.attention import pyramid
from fovea_jax.attention import engines
from fovea_jax.attention import tree_attention_xla
from fovea_jax.attention.pallas import tpu_kernels
from fovea_jax.attention.pallas import tree_attention as kernel
from jax.experimental.pallas import tpu as pltpu
from tests.attention import helpers

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

ACCELERATOR = jax.default_backend() in ('gpu', 'tpu')
# The Triton-formatted and the TPU-formatted (tile-streaming) kernels.
BACKENDS = ('gpu', 'tpu')

# (atol, rtol) against the float32 oracle run on the same (rounded) inputs.
# float32 in interpret mode agrees to rounding (observed <= 1e-6). Compiled on a
# GPU, float32 dots may run as TF32 (jax's default matmul precision there).
# bf16: pooled means and the kernels' matmul operands are rounded to bf16
# (observed <= 1.2e-2 on the cases below).
_F32 = 2e-3 if ACCELERATOR else 1e-4
TOLERANCES = {
    jnp.float32: dict(out=_F32 / 5, dq=_F32, dk=_F32, dv=_F32, dtable=_F32,
                      dextra=_F32),
    jnp.bfloat16: dict(out=2e-2, dq=4e-2, dk=4e-2, dv=3e-2, dtable=5e-2,
                       dextra=4e-2),
}
GRAD_NAMES = ('dq', 'dk', 'dv', 'dtable', 'dextra')


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  attend: Callable          # (q, k, v, key_mask, position_bias, extra, impl) -> out
  length: int = 45
  heads: int = 2
  kv_heads: int = 1
  head_dim: int = 16
  bias: bool = True
  bidirectional: bool = True
  mask: str = 'random'       # 'random', 'prefix' (empty causal rows), 'row', None
  extra: Callable = None     # (k) -> tuple of extra differentiable inputs
  dtype: object = jnp.float32

  def __str__(self):
    return self.name


def _with_position_bias(function, **options):
  """A scheme taking position_bias (fovea, local, dense) as a Case.attend."""
  def attend(q, k, v, key_mask, pb, extra, impl):
    return function(q, k, v, key_mask=key_mask, position_bias=pb,
                    implementation=impl, **options)
  return attend


_fovea = functools.partial(_with_position_bias, attention.fovea_attention)
_local = functools.partial(_with_position_bias, attention.local_attention)
_dense = functools.partial(_with_position_bias, attention.dot_product_attention)


def _fma(**options):
  def attend(q, k, v, key_mask, pb, extra, impl):
    levels = {}
    if extra:
      levels = dict(downsample='grouped_conv', k_levels=extra[0], v_levels=extra[1])
    return attention.fma_attention(q, k, v, key_mask=key_mask, implementation=impl,
                                   **levels, **options)
  return attend


def _fma_levels(length, fine_len, rank):
  def extra(k):
    rng = np.random.default_rng(5)
    shapes = [(k.shape[0], lvl.num_entries) + k.shape[2:]
              for lvl in attention.fma_levels(length, fine_len, rank)]
    make = lambda: tuple(jnp.asarray(rng.normal(size=s), k.dtype) for s in shapes)
    return make(), make()
  return extra


CASES = [
    Case('fovea_clip_once_gqa', _fovea(block_len=8)),
    Case('fovea_drop_count_wing2_maxlevel', _fovea(
        block_len=8, wing=2, edge='drop', coarse_weight='count', max_level=1),
         length=70, kv_heads=2, head_dim=32),
    Case('fovea_causal', _fovea(block_len=8, causal=True), length=50,
         bidirectional=False, mask='prefix'),
    Case('fma_avg_head_dim_24', _fma(fine_len=8, rank=2), length=70, head_dim=24,
         bias=False),
    Case('fma_learned_causal', _fma(fine_len=8, rank=4, causal=True), length=60,
         bias=False, mask='prefix', extra=_fma_levels(60, 8, 4)),
    Case('local_sliding', _local(window=5)),
    Case('local_block_causal', _local(block_len=12, causal=True),
         bidirectional=False),
    Case('dense_head_dim_64', _dense(), length=40, head_dim=64, mask='row'),
    Case('fovea_bf16', _fovea(block_len=8), dtype=jnp.bfloat16),
    Case('fma_avg_bf16', _fma(fine_len=8, rank=2), length=40, bias=False,
         dtype=jnp.bfloat16),
    Case('local_sliding_causal_bf16', _local(window=5, causal=True),
         mask='prefix', bidirectional=False, dtype=jnp.bfloat16),
    Case('dense_bf16_head_dim_128', _dense(causal=True), length=24, head_dim=128,
         mask='row', dtype=jnp.bfloat16, bidirectional=False),
]


def _small_position_bias(table, bidirectional):
  # Few buckets keep the interpreted kernels small; max_distance must exceed T5's
  # exact range (num_buckets // 2 one-sided, // 4 bidirectional).
  return attention.RelativePositionBias(table[:8], num_buckets=8, max_distance=20,
                                        bidirectional=bidirectional)


def _inputs(case):
  q, k, v, key_mask, pb = helpers.random_inputs(
      len(case.name), length=case.length, heads=case.heads,
      kv_heads=case.kv_heads, head_dim=case.head_dim, mask=case.mask is not None,
      bias=case.bias, bidirectional=case.bidirectional)
  if pb is not None:
    pb = _small_position_bias(pb.table, case.bidirectional)
  if case.mask == 'prefix':   # the first rows of causal schemes see no key
    key_mask = key_mask.at[:, :3].set(False)
  if case.mask == 'row':      # a batch element with every key masked
    key_mask = key_mask.at[1].set(False)
  q, k, v = (x.astype(case.dtype) for x in (q, k, v))
  extra = case.extra(k) if case.extra else ()
  return q, k, v, key_mask, pb, extra


def _outputs(case, impl, q, k, v, key_mask, pb, extra):
  """Output and gradients, jitted as one program (interpret mode compiles once)."""
  def run(q, k, v, key_mask, pb, extra):
    fn = lambda q, k, v, pb, *extra: case.attend(q, k, v, key_mask, pb, extra, impl)
    return helpers.loss_and_grads(fn, q, k, v, pb, extra)
  return jax.jit(run)(q, k, v, key_mask, pb, extra)


def _assert_close(case, got, want, what):
  out_a, grads_a = got
  out_b, grads_b = want
  tol = TOLERANCES[case.dtype]
  assert out_a.dtype == out_b.dtype == case.dtype
  np.testing.assert_allclose(np.asarray(out_a, np.float32),
                             np.asarray(out_b, np.float32), atol=tol['out'],
                             rtol=tol['out'], err_msg=f'{what}: output')
  for name, ga, gb in zip(GRAD_NAMES, grads_a, grads_b):
    leaves_a, leaves_b = jax.tree.leaves(ga), jax.tree.leaves(gb)
    assert len(leaves_a) == len(leaves_b), name
    for la, lb in zip(leaves_a, leaves_b):
      assert np.all(np.isfinite(np.asarray(la, np.float32))), f'{what}: {name}'
      np.testing.assert_allclose(np.asarray(la, np.float32),
                                 np.asarray(lb, np.float32), atol=tol[name],
                                 rtol=tol[name], err_msg=f'{what}: {name}')


class TestSchemes:
  """Every scheme through `implementation='pallas'` against oracle and XLA path."""

  @pytest.mark.parametrize('case', CASES, ids=str)
  def test_forward_and_gradients(self, case):
    inputs = _inputs(case)
    pallas = _outputs(case, 'pallas', *inputs)
    _assert_close(case, pallas, _outputs(case, 'reference', *inputs), 'reference')
    _assert_close(case, pallas, _outputs(case, 'xla', *inputs), 'xla')
    out, key_mask = pallas[0], inputs[3]
    if case.mask == 'row':  # rows with nothing to attend give exact zeros
      assert not np.any(np.asarray(out[1], np.float32))
    if case.mask == 'prefix':
      assert not np.any(np.asarray(out[:, :1], np.float32))
    grads = pallas[1]
    assert np.any(np.asarray(grads[1], np.float32))  # k gets a gradient
    if case.bias:
      assert np.any(np.asarray(grads[3]))            # and so does the bias table


def _fovea_flat(length=45, batch=2, heads=2, kv_heads=1, head_dim=16, causal=False,
                dtype=jnp.float32):
  layout = attention.fovea_layout(length, block_len=8, wing=1, causal=causal)
  q, k, v, key_mask, pb = helpers.random_inputs(
      3, batch=batch, length=length, heads=heads, kv_heads=kv_heads,
      head_dim=head_dim)
  pb = _small_position_bias(pb.table, not causal)
  valid = key_mask & True
  k_flat, v_flat, entry_bias = pyramid.build_flat_kv(layout, k, v, valid)
  return (layout, q.astype(dtype), k_flat.astype(dtype), v_flat.astype(dtype),
          entry_bias, pb)


class TestEngine:
  """The kernel called directly, over a flat buffer, with an explicit mode."""
  INTERPRET = True

  def setup_method(self):
    if not self.INTERPRET and not ACCELERATOR:
      pytest.skip('compiled Pallas kernels need a GPU or TPU')

  def _engine_grads(self, engine, layout, q, k_flat, v_flat, entry_bias, pb):
    def loss(q, k_flat, v_flat, table):
      pos = attention.RelativePositionBias(table, pb.num_buckets, pb.max_distance,
                                           pb.bidirectional)
      out = engine(q, k_flat, v_flat, entry_bias, layout, scale=0.3,
                   position_bias=pos)
      return jnp.sum(out.astype(jnp.float32) * jnp.cos(jnp.arange(out.size)
                                                       ).reshape(out.shape)), out
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(
        q, k_flat, v_flat, pb.table)

  @pytest.mark.parametrize('block_sizes', [
      None, kernel.BlockSizes(block_q=8, block_k=32, block_k_dkv=8)],
                           ids=['default', 'q8_k32_dkv8'])
  @pytest.mark.parametrize('backend', BACKENDS)
  def test_matches_reference_and_xla_engines(self, block_sizes, backend):
    if backend != jax.default_backend() and not self.INTERPRET:
      pytest.skip(f'compiled {backend} kernels need that device')
    layout, q, k_flat, v_flat, entry_bias, pb = _fovea_flat()
    pallas = functools.partial(kernel.tree_level_attention_pallas,
                               block_sizes=block_sizes, interpret=self.INTERPRET,
                               backend=backend)
    (_, got), grads = self._engine_grads(pallas, layout, q, k_flat, v_flat,
                                         entry_bias, pb)
    for engine in (kernel.tree_level_attention_reference,
                   tree_attention_xla.tree_level_attention_xla):
      (_, want), want_grads = self._engine_grads(engine, layout, q, k_flat, v_flat,
                                                 entry_bias, pb)
      np.testing.assert_allclose(got, want, atol=_F32 / 5, rtol=_F32 / 5)
      for a, b in zip(grads, want_grads):
        np.testing.assert_allclose(a, b, atol=_F32, rtol=_F32)

  def test_tpu_formatted_kernels_in_the_tpu_interpreter(self, monkeypatch):
    # Scalar prefetch, SMEM bias table and Mosaic's block rules, checked on CPU by
    # the TPU interpreter (stricter than the generic one); few steps per call, so
    # each kernel runs as several calls writing one aliased output.
    if not self.INTERPRET:
      pytest.skip('interpreter test')
    monkeypatch.setattr(tpu_kernels, 'MAX_STEPS_PER_CALL', 5)
    layout, q, k_flat, v_flat, entry_bias, pb = _fovea_flat(length=30, batch=1,
                                                           causal=True)
    pallas = functools.partial(kernel.tree_level_attention_pallas, backend='tpu',
                               interpret=pltpu.InterpretParams(),
                               block_sizes=kernel.BlockSizes(16, 16, 16))
    (_, got), grads = self._engine_grads(pallas, layout, q, k_flat, v_flat,
                                         entry_bias, pb)
    (_, want), want_grads = self._engine_grads(
        kernel.tree_level_attention_reference, layout, q, k_flat, v_flat,
        entry_bias, pb)
    np.testing.assert_allclose(got, want, atol=_F32 / 5, rtol=_F32 / 5)
    for a, b in zip(grads, want_grads):
      np.testing.assert_allclose(a, b, atol=_F32, rtol=_F32)


class TestEngineCompiled(TestEngine):
  INTERPRET = False


def test_engines_serve_the_pallas_engine():
  assert engines.pallas_available()
  assert engines.tree_engine('pallas') is kernel.tree_level_attention_pallas
  expected = 'pallas' if ACCELERATOR else 'xla'
  assert engines.default_implementation() == expected


def test_bad_inputs_raise_clear_errors():
  layout, q, k_flat, v_flat, entry_bias, _ = _fovea_flat(length=20, batch=1)
  with pytest.raises(ValueError, match='build_flat_kv'):
    kernel.tree_level_attention_pallas(q[:, :10], k_flat, v_flat, entry_bias,
                                       layout, scale=1.0)
  with pytest.raises(ValueError, match='entry_bias'):
    kernel.tree_level_attention_pallas(q, k_flat, v_flat, entry_bias[:, :5], layout,
                                       scale=1.0)
  with pytest.raises(ValueError, match='backend'):
    kernel.tree_level_attention_pallas(q, k_flat, v_flat, entry_bias, layout,
                                       scale=1.0, backend='cuda')
  with pytest.raises(ValueError, match='power of two'):
    kernel.BlockSizes(block_q=48)
  with pytest.raises(ValueError, match='at least 16'):
    kernel.tree_level_attention_pallas(
        q, k_flat, v_flat, entry_bias, layout, scale=1.0, backend='gpu',
        interpret=False, block_sizes=kernel.BlockSizes(16, 8, 16))



def test_position_bias_with_degenerate_buckets_is_rejected():
  layout, q, k_flat, v_flat, entry_bias, pb = _fovea_flat(length=20, batch=1)
  bad = attention.RelativePositionBias(pb.table, num_buckets=8, max_distance=4,
                                       bidirectional=False)
  with pytest.raises(ValueError, match='max_distance'):
    kernel.tree_level_attention_pallas(q, k_flat, v_flat, entry_bias, layout,
                                       scale=1.0, position_bias=bad)

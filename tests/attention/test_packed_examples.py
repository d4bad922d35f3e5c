"""Packed examples (segment ids) through every tree-path scheme on the XLA
engine: against the segment-aware dense oracles (forward and gradients,
float32, `helpers` tolerances), no gradient across segments, and, where the
pattern does not depend on where an example starts, packed outputs equal to
each example run alone. The Pallas kernels: tests/kernels/
test_packed_kernels.py; LongT5 transient-global: test_packed_longt5.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax import attention
from fovea_jax.attention import common
from fovea_jax.attention import dense
from fovea_jax.attention import fma
from tests.attention import helpers
from tests.attention.packed_inputs import LENGTH, SEGMENT_IDS, segment_ids_of

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

CASES = {
    'fovea causal': (attention.fovea_attention, dict(block_len=4, causal=True)),
    'fovea bidirectional': (attention.fovea_attention, dict(block_len=4)),
    'fovea count weight': (attention.fovea_attention,
                           dict(block_len=3, causal=True, coarse_weight='count')),
    'fovea drop edge': (attention.fovea_attention,
                        dict(block_len=2, edge='drop', max_level=2)),
    'fma causal': (attention.fma_attention, dict(fine_len=4, rank=2, causal=True)),
    'fma bidirectional': (attention.fma_attention, dict(fine_len=4, rank=2)),
    'sliding causal': (attention.local_attention, dict(window=5, causal=True)),
    'sliding': (attention.local_attention, dict(window=6)),
    'block local': (attention.local_attention, dict(block_len=8)),
    'block local causal': (attention.local_attention,
                           dict(block_len=5, causal=True)),
}
# Schemes without a relative position bias.
NO_BIAS = (attention.fma_attention,)


def learned_filters(seed=7, *, fine_len=4, rank=2, head_dim=8):
  """Random grouped_conv filters for every level at LENGTH (not the window
  mean they start from, so that every tap of a group matters)."""
  rng = np.random.default_rng(seed)
  return {lvl.level: tuple(jnp.asarray(rng.normal(size=(lvl.group_size, head_dim,
                                                        rank)), jnp.float32)
                           for _ in range(2))
          for lvl in fma.fma_levels(LENGTH, fine_len, rank)}


LEARNED = dict(fine_len=4, rank=2, downsample='grouped_conv')
# Learned FMA meets its oracle in test_packed_learned_fma_filter_gradients_...
# (with the filters' gradients); here it joins the leak test.
LEARNED_CASES = {
    'fma learned causal': (attention.fma_attention,
                           dict(LEARNED, causal=True,
                                level_filters=learned_filters())),
    'fma learned bidirectional': (attention.fma_attention,
                                  dict(LEARNED, level_filters=learned_filters())),
}


def _inputs(fn, options, seed=3):
  q, k, v, _, pb = helpers.random_inputs(
      seed, length=LENGTH, heads=4, kv_heads=2,
      bidirectional=not options.get('causal'), bias=fn not in NO_BIAS)
  key_mask = jnp.asarray(SEGMENT_IDS > 0)
  return q, k, v, key_mask, pb


def _runner(fn, options, implementation, key_mask, segment_ids=SEGMENT_IDS):
  bias_arg = {} if fn in NO_BIAS else None

  def run(q, k, v, pb):
    extra = dict(position_bias=pb) if bias_arg is None else {}
    return fn(q, k, v, key_mask=key_mask, segment_ids=jnp.asarray(segment_ids),
              implementation=implementation, **extra, **options)
  return run


@pytest.mark.parametrize('name', CASES)
def test_packed_xla_matches_segment_aware_oracle(name):
  fn, options = CASES[name]
  q, k, v, key_mask, pb = _inputs(fn, options)
  keep = key_mask[:, :, None, None]  # padding rows' outputs are not compared

  def masked(run):
    return lambda q, k, v, pb: jnp.where(keep, run(q, k, v, pb), 0.0)

  helpers.assert_same(masked(_runner(fn, options, 'reference', key_mask)),
                      masked(_runner(fn, options, 'xla', key_mask)),
                      q, k, v, pb)


# Where a leak could hide: pooled entries and blocks that reach across
# segments (a sliding window's mask is the dense one).
LEAK_CASES = ['fovea causal', 'fovea bidirectional', 'fovea drop edge',
              'fma causal', 'fma bidirectional', 'fma learned causal',
              'fma learned bidirectional', 'block local']


@pytest.mark.parametrize('name', LEAK_CASES)
def test_no_gradient_crosses_segments(name):
  """d(outputs of segment s) / d(inputs of any other segment) is exactly 0,
  for every segment of row 0 (gradients flow through pooled entries)."""
  fn, options = {**CASES, **LEARNED_CASES}[name]
  q, k, v, key_mask, pb = _inputs(fn, options)
  run = _runner(fn, options, 'xla', key_mask)
  ids = jnp.asarray(SEGMENT_IDS)

  @jax.jit
  def grads(q, k, v, segment):
    def loss(q, k, v):
      out = run(q, k, v, pb)
      return jnp.sum(jnp.where((ids == segment)[:, :, None, None], out, 0.0))
    return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

  for segment in range(1, int(SEGMENT_IDS[0].max()) + 1):
    elsewhere = np.asarray(ids != segment)[:, :, None, None]
    for name_, g in zip(('dq', 'dk', 'dv'), grads(q, k, v, segment)):
      leaked = np.abs(np.where(elsewhere, np.asarray(g), 0.0)).max()
      assert leaked == 0.0, (name_, segment, leaked)
    inside = np.asarray(ids == segment)[:, :, None, None]
    assert np.abs(np.where(inside, np.asarray(grads(q, k, v, segment)[1]),
                           0.0)).max() > 0  # the test can see a gradient


ALONE_CASES = ['sliding causal', 'sliding', 'block local', 'block local causal']


@pytest.mark.parametrize('name', ALONE_CASES)
def test_packed_equals_each_example_alone(name):
  """Sliding window and block local (blocks counted from each example's
  start): a packed example's outputs are those of the example alone."""
  fn, options = CASES[name]
  q, k, v, key_mask, pb = _inputs(fn, options)
  spans = [(row, int(w[0]), int(w[-1]) + 1)
           for row in range(2) for segment in range(1, SEGMENT_IDS[row].max() + 1)
           for w in [np.nonzero(SEGMENT_IDS[row] == segment)[0]]]

  @jax.jit
  def packed_and_alone(q, k, v):
    alone = [fn(*(x[row:row + 1, lo:hi] for x in (q, k, v)), position_bias=pb,
                implementation='xla', **options) for row, lo, hi in spans]
    return _runner(fn, options, 'xla', key_mask)(q, k, v, pb), alone

  packed, alone = packed_and_alone(q, k, v)
  for (row, lo, hi), want in zip(spans, alone):
    np.testing.assert_allclose(packed[row:row + 1, lo:hi], want,
                               **helpers.FORWARD_TOL)


@pytest.mark.parametrize('causal', [True, False])
def test_packed_learned_fma_filter_gradients_match_oracle(causal):
  """FMA's learned levels, packed: the engine's tail/head entries against
  the oracle's per-query filters over its own segment, forward and
  gradients of q, k, v and the filters."""
  q, k, v, key_mask, _ = _inputs(attention.fma_attention, dict(causal=causal))
  keep = key_mask[:, :, None, None]
  ids = jnp.asarray(SEGMENT_IDS)

  def run(implementation):
    def f(q, k, v, pb, filters):
      del pb
      out = attention.fma_attention(
          q, k, v, causal=causal, key_mask=key_mask, segment_ids=ids,
          level_filters=filters, implementation=implementation, **LEARNED)
      return jnp.where(keep, out, 0.0)
    return f

  helpers.assert_same(run('reference'), run('xla'), q, k, v, None,
                      extra=(learned_filters(),))


def test_dense_flash_path_with_segments_matches_oracle():
  """Dense attention with segment ids on the flash (tree) path, causal and
  not, self- and cross-attention: as the materialised oracle."""
  q, k, v, _, pb = helpers.random_inputs(5, length=LENGTH, heads=4, kv_heads=2)
  ids = jnp.asarray(SEGMENT_IDS)
  for causal in (False, True):
    run = lambda impl: lambda q, k, v, pb: attention.run_tree_layout(
        dense.flash_layout(LENGTH, causal=causal, query_block=8), q, k, v,
        scale=None, key_mask=ids > 0, position_bias=pb,
        implementation=impl, q_segment_ids=ids, kv_segment_ids=ids)
    oracle = lambda q, k, v, pb: attention.dot_product_attention(
        q, k, v, causal=causal, key_mask=ids > 0, position_bias=pb,
        q_segment_ids=ids, kv_segment_ids=ids, implementation='reference')
    keep = (ids > 0)[:, :, None, None]
    masked = lambda f: lambda *a: jnp.where(keep, f(*a), 0.0)
    helpers.assert_same(masked(oracle), masked(run('xla')), q, k, v, pb)
  # Cross-attention: 13 decoder queries in two segments over the encoder's.
  dec_ids = jnp.asarray(np.stack([segment_ids_of([6, 7], 13)] * 2))
  q_dec = q[:, :13]
  flash = attention.run_tree_layout(
      dense.flash_layout(LENGTH, causal=False, query_block=8,
                             query_length=13), q_dec, k, v, scale=None,
      key_mask=ids > 0, position_bias=None, implementation='xla',
      q_segment_ids=dec_ids, kv_segment_ids=ids)
  want = attention.dot_product_attention(
      q_dec, k, v, key_mask=ids > 0, q_segment_ids=dec_ids, kv_segment_ids=ids,
      implementation='reference')
  np.testing.assert_allclose(flash, want, **helpers.FORWARD_TOL)


def test_segment_id_errors_name_the_problem():
  q, k, v, _, _ = helpers.random_inputs(1, length=16, bias=False, mask=False)
  with pytest.raises(ValueError, match=r'segment_ids must be \[batch, length\]'):
    attention.fovea_attention(q, k, v, block_len=4,
                              segment_ids=jnp.ones((2, 15), jnp.int32))
  with pytest.raises(ValueError, match='both q_segment_ids and kv_segment_ids'):
    attention.dot_product_attention(q, k, v,
                                    q_segment_ids=jnp.ones((2, 16), jnp.int32))
  with pytest.raises(ValueError, match='pass level_filters instead of k_levels'):
    levels = [jnp.zeros((2, 8, 2, 8))] * 1
    attention.fma_attention(q, k, v, fine_len=8, rank=4,
                            downsample='grouped_conv', k_levels=levels,
                            v_levels=levels,
                            segment_ids=jnp.ones((2, 16), jnp.int32))


def test_positions_and_block_ids_restart_per_segment():
  ids = jnp.asarray([[1, 1, 1, 2, 3, 3, 0, 0]])
  np.testing.assert_array_equal(
      common.positions_in_segment(ids), [[0, 1, 2, 0, 0, 1, 0, 1]])
  np.testing.assert_array_equal(
      common.block_segment_ids(ids, 2), [[1, 1, 2, 3, 4, 4, 5, 5]])

"""Fast Multipole Attention: XLA path == dense oracle, levels, learned levels."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax import attention
from tests.attention import helpers

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow


def test_levels_follow_the_spec():
  levels = attention.fma_levels(1000, fine_len=16, rank=4)
  assert attention.fma_padded_length(1000, 16) == 1024
  # L = log2(n/m) - 1 = 5 levels, w_l = m * 2^(l-1), w_L = n/4.
  assert [lvl.group_size for lvl in levels] == [16, 32, 64, 128, 256]
  assert [lvl.window for lvl in levels] == [4, 8, 16, 32, 64]
  assert [lvl.num_entries for lvl in levels] == [256, 128, 64, 32, 16]


@pytest.mark.parametrize('causal', [False, True])
def test_interaction_lists_partition_the_mask(causal):
  n, m = 64, 4
  levels = attention.fma_levels(n, m, 1)
  layout = attention.fma_layout(n, fine_len=m, rank=1, causal=causal)
  lo, hi = layout.entry_lo_hi
  for block in range(n // m):
    covered = np.zeros(n, int)
    for start, size in zip(layout.span_start[block], layout.span_len[block]):
      for e in range(start, start + size):
        covered[lo[e]:hi[e] + 1] += 1
    last = (block + 1) * m if causal else n
    np.testing.assert_array_equal(covered[:last], 1)
    np.testing.assert_array_equal(covered[last:], 0)
  assert len(levels) == 3


CASES = [
    dict(fine_len=4, rank=2),
    dict(fine_len=4, rank=4),
    dict(fine_len=8, rank=2, causal=True),
    dict(fine_len=2, rank=1, causal=True),
]


@pytest.mark.parametrize('options', CASES, ids=str)
@pytest.mark.parametrize('length,masked', [(45, True), (32, False)])
def test_avg_xla_matches_reference(options, length, masked):
  q, k, v, key_mask, _ = helpers.random_inputs(length, length=length, mask=masked,
                                               bias=False)

  def run(implementation):
    return lambda q, k, v, _: attention.fma_attention(
        q, k, v, key_mask=key_mask, implementation=implementation, **options)

  helpers.assert_same(run('reference'), run('xla'), q, k, v, None)


def test_avg_is_dense_over_window_means():
  """The oracle of docs/attention.md for 'avg': dense softmax with far keys replaced by window means."""
  n, m, p = 32, 4, 2
  q, k, v, _, _ = helpers.random_inputs(3, length=n, batch=1, mask=False,
                                        bias=False, heads=1)
  out = attention.fma_attention(q, k, v, fine_len=m, rank=p, implementation='xla')
  layout = attention.fma_layout(n, fine_len=m, rank=p)
  lo, hi = layout.entry_lo_hi
  for t in (0, 13, 31):
    k_bar, v_bar = np.zeros((n, 8)), np.zeros((n, 8))
    block = t // m
    for start, size in zip(layout.span_start[block], layout.span_len[block]):
      for e in range(start, start + size):
        k_bar[lo[e]:hi[e] + 1] = k[0, lo[e]:hi[e] + 1, 0].mean(0)
        v_bar[lo[e]:hi[e] + 1] = v[0, lo[e]:hi[e] + 1, 0].mean(0)
    weights = jax.nn.softmax(k_bar @ np.asarray(q[0, t, 0]) / np.sqrt(8))
    np.testing.assert_allclose(out[0, t, 0], weights @ v_bar, **helpers.FORWARD_TOL)


@pytest.mark.parametrize('causal', [False, True])
def test_learned_levels_match_reference_with_grads(causal):
  n, m, p = 27, 4, 2
  q, k, v, key_mask, _ = helpers.random_inputs(5, length=n, bias=False)
  rng = np.random.default_rng(6)
  shapes = [(2, lvl.num_entries, 2, 8) for lvl in attention.fma_levels(n, m, p)]
  k_levels = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes]
  v_levels = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes]

  def run(implementation):
    return lambda q, k, v, _, kl, vl: attention.fma_attention(
        q, k, v, fine_len=m, rank=p, downsample='grouped_conv', k_levels=kl,
        v_levels=vl, causal=causal, key_mask=key_mask,
        implementation=implementation)

  helpers.assert_same(run('reference'), run('xla'), q, k, v, None,
                      extra=(k_levels, v_levels))

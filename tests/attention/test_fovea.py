"""Fovea attention: XLA path == dense oracle, level maps, edge cases."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax import attention
from tests.attention import helpers

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

SPEC_MAP_16 = {  # docs/attention.md#fovea, edge='drop', 16 blocks
    0: '0011222233333333',
    1: '000112222.......',
    3: '11000112222.....',
    7: '222211000112222.',
    15: '3333333322221100',
}


def test_drop_level_map_matches_spec():
  levels, _ = attention.fovea_level_map(16, edge='drop')
  for row, text in SPEC_MAP_16.items():
    assert ''.join('.' if x < 0 else str(x) for x in levels[row]) == text


def test_drop_misses_41_7_blocks_at_16k():
  assert attention.average_unseen_blocks(16384 // 128, edge='drop') == pytest.approx(
      41.7, abs=0.05)


@pytest.mark.parametrize('wing,max_level', [(1, None), (2, None), (1, 2), (3, 1)])
def test_clip_sees_every_block_exactly_once(wing, max_level):
  levels, _ = attention.fovea_level_map(23, wing=wing, max_level=max_level)
  assert (levels >= 0).all()
  if max_level is not None:
    assert levels.max() == max_level


CASES = [
    dict(block_len=4),
    dict(block_len=4, coarse_weight='count'),
    dict(block_len=4, edge='drop'),
    dict(block_len=3, wing=2),
    dict(block_len=4, max_level=1),
    dict(block_len=5, causal=True),
    dict(block_len=2, wing=2, causal=True, coarse_weight='count'),
    dict(block_len=8, edge='drop', max_level=1),
]


# The fast half (-m "not slow") keeps two cheap cases at one length.
FAST_CASES = [dict(block_len=4, edge='drop'), dict(block_len=4, max_level=1)]


@pytest.mark.parametrize('options', [
    o if o in FAST_CASES else pytest.param(o, marks=pytest.mark.slow)
    for o in CASES], ids=lambda o: '-'.join(f'{k}={v}' for k, v in o.items()))
@pytest.mark.parametrize('length,masked', [
    (37, True), pytest.param(29, False, marks=pytest.mark.slow)])
def test_xla_matches_reference_forward_and_grads(options, length, masked):
  q, k, v, key_mask, pb = helpers.random_inputs(
      length, length=length, mask=masked, bidirectional=not options.get('causal'))

  def run(implementation):
    return lambda q, k, v, pb: attention.fovea_attention(
        q, k, v, key_mask=key_mask, position_bias=pb,
        implementation=implementation, **options)

  helpers.assert_same(run('reference'), run('xla'), q, k, v, pb)


@pytest.mark.slow
def test_reference_with_level_zero_only_is_dense():
  q, k, v, key_mask, pb = helpers.random_inputs(1, length=21)
  fovea = attention.fovea_attention(q, k, v, block_len=4, max_level=0,
                                    key_mask=key_mask, position_bias=pb,
                                    implementation='reference')
  dense = attention.dot_product_attention(q, k, v, key_mask=key_mask,
                                          position_bias=pb)
  np.testing.assert_allclose(fovea, dense, **helpers.FORWARD_TOL)


@pytest.mark.slow
def test_count_weighting_is_dense_over_window_means():
  """'count' == dense attention where every key/value is its window's mean."""
  n, block = 16, 2
  q, k, v, _, _ = helpers.random_inputs(2, length=n, batch=1, mask=False,
                                        bias=False)
  out = attention.fovea_attention(q, k, v, block_len=block, coarse_weight='count',
                                  implementation='xla')
  levels, firsts = attention.fovea_level_map(n // block)
  for t in (0, 9):
    s = t // block
    k_bar, v_bar = [], []
    for j in range(n):
      width = 2 ** levels[s, j // block]
      start = firsts[s, j // block] * block
      w0 = start + (j - start) // width * width
      k_bar.append(k[0, max(w0, 0):w0 + width].mean(0))
      v_bar.append(v[0, max(w0, 0):w0 + width].mean(0))
    k_bar, v_bar = jnp.stack(k_bar), jnp.stack(v_bar)  # [n, heads, d]
    logits = jnp.einsum('hd,jhd->hj', q[0, t], k_bar) / np.sqrt(q.shape[-1])
    expected = jnp.einsum('hj,jhd->hd', jax.nn.softmax(logits, -1), v_bar)
    np.testing.assert_allclose(out[0, t], expected, **helpers.FORWARD_TOL)


@pytest.mark.slow
def test_xla_several_chunks_with_grouped_heads_matches_reference(monkeypatch):
  """Three query blocks per scan step over 8 blocks: several steps per kv head, a
  padded last one, grouped kv heads and the position bias (long inputs run many
  steps)."""
  from fovea_jax.attention import tree_attention_xla
  q, k, v, key_mask, pb = helpers.random_inputs(5, length=29, heads=4, kv_heads=2)
  layout = attention.fovea_layout(29, block_len=4)
  keys = layout.gather_index[0].shape[1]
  budget = 3 * (4 * 4 * q.shape[0] * 2 * 4 * keys)  # 2 query heads per kv head
  assert tree_attention_xla._choose_chunk(layout, 2, 2, budget) == 3
  monkeypatch.setitem(tree_attention_xla.tree_level_attention_xla.__kwdefaults__,
                      'chunk_bytes', budget)

  def run(implementation):
    return lambda q, k, v, pb: attention.fovea_attention(
        q, k, v, block_len=4, key_mask=key_mask, position_bias=pb,
        implementation=implementation)

  helpers.assert_same(run('reference'), run('xla'), q, k, v, pb)

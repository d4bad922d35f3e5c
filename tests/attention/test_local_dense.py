"""Local (sliding / block) and dense attention against their oracles."""
import numpy as np
import pytest

from fovea_jax import attention
from tests.attention import helpers

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

CASES = [
    dict(window=5),
    dict(window=0),
    dict(window=20),
    dict(window=6, causal=True),
    dict(block_len=7),
    dict(block_len=4, causal=True),
]


@pytest.mark.parametrize('options', CASES, ids=str)
def test_local_xla_matches_reference(options):
  q, k, v, key_mask, pb = helpers.random_inputs(
      11, length=43, kv_heads=1, bidirectional=not options.get('causal'))

  def run(implementation):
    return lambda q, k, v, pb: attention.local_attention(
        q, k, v, key_mask=key_mask, position_bias=pb,
        implementation=implementation, **options)

  helpers.assert_same(run('reference'), run('xla'), q, k, v, pb)


def test_local_pattern_is_the_spec_pattern():
  """Independent check of the oracle: sliding window == dense with |i-j| <= W."""
  q, k, v, _, _ = helpers.random_inputs(12, length=19, batch=1, mask=False,
                                        bias=False)
  window = 3
  out = attention.local_attention(q, k, v, window=window, implementation='xla')
  for t in (0, 9, 18):
    lo, hi = max(t - window, 0), min(t + window, 18) + 1
    expected = attention.dot_product_attention(q[:, t:t + 1], k[:, lo:hi],
                                               v[:, lo:hi])
    np.testing.assert_allclose(out[:, t:t + 1], expected, **helpers.FORWARD_TOL)


def test_dense_with_segments_blocks_other_segments():
  q, k, v, _, _ = helpers.random_inputs(13, length=10, batch=1, mask=False,
                                        bias=False)
  seg = np.array([[1] * 4 + [2] * 6])
  out = attention.dot_product_attention(q, k, v, q_segment_ids=seg,
                                        kv_segment_ids=seg)
  first = attention.dot_product_attention(q[:, :4], k[:, :4], v[:, :4])
  np.testing.assert_allclose(out[:, :4], first, **helpers.FORWARD_TOL)


def test_relative_position_bucket_matches_t5():
  # Values of T5's bucketing (bidirectional, 32 buckets, max distance 128).
  rel = np.array([-200, -128, -20, -8, -1, 0, 1, 7, 8, 16, 60, 127, 500])
  got = attention.relative_position_bucket(rel)
  np.testing.assert_array_equal(got, [15, 15, 10, 8, 1, 0, 17, 23, 24, 26, 29, 31,
                                      31])
  causal = attention.relative_position_bucket(rel, bidirectional=False)
  np.testing.assert_array_equal(causal[:6], [31, 31, 17, 8, 1, 0])
  np.testing.assert_array_equal(causal[6:], 0)
  with pytest.raises(ValueError, match='max_distance'):
    attention.relative_position_bucket(rel, bidirectional=False, max_distance=16)


@pytest.mark.parametrize('q_len,kv_len,causal,bias', [
    (37, 37, False, True),   # self-attention, T5 bias, blocks cut by the end
    (37, 37, True, True),    # causal flash layout
    # Without a T5 bias nothing is masked in these two: no static bias is added
    # (`_Plan.unmasked`).
    (21, 53, False, False),  # cross-attention: fewer queries than keys
    (70, 29, False, False),  # more queries than keys
], ids=str)
def test_dense_scan_path_matches_reference(monkeypatch, q_len, kv_len, causal,
                                           bias):
  """Large dense calls under 'xla' run on the tree path (one query block at a
  time); lowering the size threshold sends these small ones there too."""
  from fovea_jax.attention import api
  monkeypatch.setattr(api, 'DENSE_SCAN_SCORES', 1)
  q, _, _, _, pb = helpers.random_inputs(14, length=q_len, bias=bias)
  _, k, v, key_mask, _ = helpers.random_inputs(15, length=kv_len, kv_heads=1)

  def run(implementation):
    return lambda q, k, v, pb: attention.dot_product_attention(
        q, k, v, causal=causal, key_mask=key_mask, position_bias=pb,
        implementation=implementation)

  helpers.assert_same(run('reference'), run('xla'), q, k, v, pb)

"""Packed rows split over the sequence equal unsharded (inputs, tolerance:
context_parallel_cases.py): examples cut anywhere, also inside chunks and
coarse windows, so pooled entries average one example's tokens across chunk
boundaries, bidirectional layouts' 'head' copies included."""
import jax.numpy as jnp
import pytest

from fovea_jax import attention
from tests.attention import context_parallel_cases as cases

pytestmark = pytest.mark.slow  # compiles one engine per device


def _packed(name, causal, ids):
  if name == 'fovea':
    return lambda q, k, v, _: attention.fovea_attention(
        q, k, v, block_len=64, causal=causal, segment_ids=ids,
        implementation='xla')
  if name == 'fma_learned':
    return lambda q, k, v, f: attention.fma_attention(
        q, k, v, fine_len=32, rank=4, downsample='grouped_conv',
        level_filters=f, causal=causal, segment_ids=ids, implementation='xla')
  if name == 'block_local':
    return lambda q, k, v, _: attention.local_attention(
        q, k, v, block_len=48, causal=causal, segment_ids=ids,
        implementation='xla')
  # Cross-attention: 200 queries of the first examples over all keys.
  return lambda q, k, v, _: attention.dot_product_attention(
      q[:, :200], k, v, q_segment_ids=ids[:, :200], kv_segment_ids=ids,
      implementation='xla')


@pytest.mark.parametrize('name,causal,mesh_shape', [
    ('fovea', False, (2, 4, 1)), ('fma_learned', True, (2, 2, 2)),
    ('block_local', False, (2, 2, 2)), ('cross', False, (2, 4, 1))])
def test_packed_rows_sharded_equal_unsharded(name, causal, mesh_shape):
  ids = cases.segment_ids(cases.LENGTH)
  params = cases.filters(cases.LENGTH) if name == 'fma_learned' else None
  queries = 200 if name == 'cross' else cases.LENGTH
  real = jnp.ones((2, queries), bool)
  cases.check_sharded_equals_unsharded(_packed(name, causal, ids), params,
                                       real, mesh_shape)

"""Behaviour every scheme shares: causality, padding, empty rows, jit/vmap, errors."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax import attention
from tests.attention import helpers

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

CAUSAL_SCHEMES = {
    'dense': functools.partial(attention.dot_product_attention, causal=True),
    'fovea': functools.partial(attention.fovea_attention, block_len=4, causal=True),
    'fovea_wing2': functools.partial(attention.fovea_attention, block_len=3, wing=2,
                                     causal=True, coarse_weight='count'),
    'fma': functools.partial(attention.fma_attention, fine_len=4, rank=2,
                             causal=True),
    'sliding': functools.partial(attention.local_attention, window=5, causal=True),
    'block': functools.partial(attention.local_attention, block_len=6, causal=True),
}

SCHEMES = {
    'fovea': functools.partial(attention.fovea_attention, block_len=4),
    'fovea_drop': functools.partial(attention.fovea_attention, block_len=4,
                                    edge='drop'),
    'fma': functools.partial(attention.fma_attention, fine_len=4, rank=2),
    'sliding': functools.partial(attention.local_attention, window=5),
    **CAUSAL_SCHEMES,
}


@pytest.mark.parametrize('name', sorted(CAUSAL_SCHEMES))
@pytest.mark.parametrize('implementation', ['reference', 'xla'])
def test_causal_gradients_never_reach_the_future(name, implementation):
  n = 30
  q, k, v, _, _ = helpers.random_inputs(21, length=n, batch=1, mask=False,
                                        bias=False)
  fn = CAUSAL_SCHEMES[name]

  def row_sums(k, v):
    return fn(q, k, v, implementation=implementation)[0].sum(axis=(1, 2))

  # d(row i) / d(k, v) for every row i at once, in one compiled program.
  jac_k, jac_v = jax.jit(jax.jacrev(row_sums, argnums=(0, 1)))(k, v)
  for i in (0, 5, 13, 29):
    dk, dv = jac_k[i], jac_v[i]
    assert np.abs(dk[0, i + 1:]).max(initial=0) == 0
    assert np.abs(dv[0, i + 1:]).max(initial=0) == 0
    assert np.abs(dv[0, :i + 1]).max() > 0


@pytest.mark.parametrize('name', sorted(SCHEMES))
def test_masked_keys_never_leak(name):
  q, k, v, key_mask, _ = helpers.random_inputs(22, length=33, bias=False)
  fn = jax.jit(functools.partial(SCHEMES[name], key_mask=key_mask,
                                 implementation='xla'))
  noise = jnp.asarray(np.random.default_rng(3).normal(size=k.shape) * 100,
                      jnp.float32)
  hidden = ~key_mask[:, :, None, None]
  base = fn(q, k, v)
  changed = fn(q, jnp.where(hidden, k + noise, k), jnp.where(hidden, v + noise, v))
  np.testing.assert_allclose(base, changed, atol=1e-5)


@pytest.mark.parametrize('name', sorted(SCHEMES))
@pytest.mark.parametrize('implementation', ['reference', 'xla'])
def test_query_without_valid_key_returns_zeros(name, implementation):
  q, k, v, _, _ = helpers.random_inputs(23, length=24, bias=False)
  key_mask = jnp.zeros((2, 24), bool).at[1, 10:12].set(True)

  def loss(q, k, v):
    out = SCHEMES[name](q, k, v, key_mask=key_mask, implementation=implementation)
    return out.sum(), out

  (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2),
                                               has_aux=True))(q, k, v)
  assert np.all(np.isfinite(out)) and all(np.all(np.isfinite(g)) for g in grads)
  np.testing.assert_array_equal(out[0], 0.0)


@pytest.mark.parametrize('name', ['fovea', 'fma', 'sliding'])
def test_vmap_over_an_extra_axis(name):
  q, k, v, _, _ = helpers.random_inputs(24, length=20, bias=False, mask=False)
  fn = functools.partial(SCHEMES[name], implementation='xla')
  stacked = [jnp.stack([x, 2 * x]) for x in (q, k, v)]
  got = jax.jit(jax.vmap(fn))(*stacked)
  np.testing.assert_allclose(got[1], fn(2 * q, 2 * k, 2 * v), atol=1e-5)


def test_gqa_matches_repeated_heads():
  q, k, v, key_mask, pb = helpers.random_inputs(25, length=26, heads=4, kv_heads=2)
  run = functools.partial(attention.fovea_attention, block_len=4, key_mask=key_mask,
                          position_bias=pb, implementation='xla')
  np.testing.assert_allclose(run(q, k, v), run(q, jnp.repeat(k, 2, 2),
                                               jnp.repeat(v, 2, 2)), atol=1e-5)


BAD_INPUTS = [
    (dict(k_shape=(2, 20, 2, 4)), 'head_dim'),
    (dict(k_shape=(2, 20, 3, 8)), 'heads'),
    (dict(k_shape=(2, 19, 2, 8)), 'length'),
    (dict(block_len=0), 'block_len'),
    (dict(implementation='cuda'), 'implementation'),
    (dict(edge='wrap'), 'edge'),
]


@pytest.mark.parametrize('change,word', BAD_INPUTS, ids=lambda x: str(x))
def test_bad_input_names_the_argument(change, word):
  q, k, v, _, _ = helpers.random_inputs(26, length=20, bias=False, mask=False)
  change = dict(change)
  if 'k_shape' in change:
    k = v = jnp.zeros(change.pop('k_shape'))
  options = dict(block_len=4, implementation='xla') | change
  with pytest.raises(ValueError, match=word):
    attention.fovea_attention(q, k, v, **options)


def test_fma_rank_must_divide_group():
  q, k, v, _, _ = helpers.random_inputs(27, length=20, bias=False, mask=False)
  with pytest.raises(ValueError, match='rank'):
    attention.fma_attention(q, k, v, fine_len=6, rank=4)
  with pytest.raises(ValueError, match='k_levels'):
    attention.fma_attention(q, k, v, fine_len=4, rank=2, downsample='grouped_conv')


def test_bad_mask_and_bias_shapes():
  q, k, v, _, pb = helpers.random_inputs(28, length=20, mask=False)
  with pytest.raises(ValueError, match='key_mask'):
    attention.local_attention(q, k, v, window=2, key_mask=jnp.ones((2, 19), bool))
  with pytest.raises(ValueError, match='heads'):
    attention.local_attention(q, k, v, window=2, position_bias=attention.
                              RelativePositionBias(jnp.zeros((32, 3))))
  with pytest.raises(ValueError, match='exactly one'):
    attention.local_attention(q, k, v, window=2, block_len=4)

"""LongT5 transient-global attention: blockwise vs a dense oracle and vs transformers.

The dense oracle below builds the full [length, length + globals] logits the
blockwise code avoids; transformers' own functions are the oracle for the group
ids (orphan tokens, padding) and the bias layout (tests skip without torch).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax import attention
from fovea_jax.attention import common
from fovea_jax.attention import longt5

RADIUS, GROUP = 3, 4


def _bias(heads, seed, bidirectional=True):
  table = jax.random.normal(jax.random.PRNGKey(seed), (32, heads))
  return attention.RelativePositionBias(table, bidirectional=bidirectional)


def _dense_oracle(q, k, v, side_k, side_v, block_ids, global_valid, key_mask,
                  bias, side_bias, causal):
  """Every (query, key) and (query, global) logit materialised."""
  length, num_globals = q.shape[1], side_k.shape[1]
  i = np.arange(length)[:, None]
  j = np.arange(length)[None, :]
  allowed = (np.abs(i - j) <= RADIUS) & ((j <= i) if causal else True)
  local = jnp.where(jnp.asarray(allowed)[None] & key_mask[:, None, :], 0.0,
                    common.MASKED)[:, None]
  local = local + jnp.transpose(bias.bias(jnp.asarray(j - i)), (2, 0, 1))[None]
  g = np.arange(num_globals)
  if causal:
    own = jnp.broadcast_to(jnp.arange(length) // GROUP, key_mask.shape)
    seen = jnp.asarray((g[None] + 1) * GROUP - 1 <= np.arange(length)[:, None])
    side_ok = seen[None] & global_valid[:, None, :]
  else:
    own = block_ids
    side_ok = key_mask[:, :, None] == global_valid[:, None, :]
  side = jnp.where(side_ok, 0.0, common.MASKED)[:, None]
  side = side + jnp.transpose(side_bias.bias(g[None, None] - own[:, :, None]),
                              (0, 3, 1, 2))
  bank_k = jnp.concatenate([k, side_k], 1)
  bank_v = jnp.concatenate([v, side_v], 1)
  return common.masked_dense_attention(q, bank_k, bank_v,
                                       jnp.concatenate([local, side], -1), 1.0)


def _case(length, valid_len, causal, seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), 6)
  q = jax.random.normal(keys[0], (2, length, 2, 8))
  k = jax.random.normal(keys[1], (2, length, 1, 8))  # grouped-query heads
  v = jax.random.normal(keys[2], (2, length, 1, 8))
  key_mask = jnp.arange(length)[None] < jnp.array([[length], [valid_len]])
  block_ids, global_valid = longt5.global_block_ids(key_mask, GROUP,
                                                    causal=causal)
  num_globals = length // GROUP
  side_k = jax.random.normal(keys[3], (2, num_globals, 1, 8))
  side_v = jax.random.normal(keys[4], (2, num_globals, 1, 8))
  return q, k, v, side_k, side_v, block_ids, global_valid, key_mask


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('length,valid_len', [(23, 17), (16, 16), (3, 2)])
def test_blockwise_equals_dense_oracle(causal, length, valid_len):
  q, k, v, side_k, side_v, ids, gvalid, mask = _case(length, valid_len, causal)
  bias = _bias(2, 1, bidirectional=not causal)
  side_bias = _bias(2, 2, bidirectional=not causal)
  @jax.jit
  def both(q, k, v, side_k, side_v, ids, gvalid, mask):
    got = longt5.transient_global_attention(
        q, k, v, side_k, side_v, block_ids=ids, global_valid=gvalid,
        local_radius=RADIUS, global_block_size=GROUP, causal=causal,
        key_mask=mask, position_bias=bias, side_position_bias=side_bias)
    return got, _dense_oracle(q, k, v, side_k, side_v, ids, gvalid, mask, bias,
                              side_bias, causal)

  got, want = both(q, k, v, side_k, side_v, ids, gvalid, mask)
  real = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real],
                             atol=1e-5, rtol=1e-5)


def test_causal_variant_has_no_leak():
  q, k, v, side_k, side_v, ids, gvalid, mask = _case(13, 13, True)
  bias, side_bias = _bias(2, 1, False), _bias(2, 2, False)
  length = q.shape[1]

  def out(k, v):
    # Global tokens are sums of past groups: make them depend on k like a layer.
    groups = k[:, :(length // GROUP) * GROUP].reshape(2, -1, GROUP, 1, 8).sum(2)
    return longt5.transient_global_attention(
        q, k, v, groups, groups, block_ids=ids, global_valid=gvalid,
        local_radius=RADIUS, global_block_size=GROUP, causal=True,
        position_bias=bias, side_position_bias=side_bias)

  jac_k, jac_v = jax.jit(jax.jacrev(lambda k, v: out(k, v).sum((2, 3)),
                                    argnums=(0, 1)))(k, v)  # [b, t, b, j, 1, d]
  dependence = np.asarray(jnp.abs(jac_k).sum((4, 5)) +
                          jnp.abs(jac_v).sum((4, 5)))[0, :, 0]  # [t, j]
  assert np.all(dependence[np.triu_indices(length, k=1)] == 0.0)
  assert np.all(np.diag(dependence) > 0.0)


def test_step_equals_full_causal_pass():
  q, k, v, side_k, side_v, ids, gvalid, mask = _case(13, 13, True)
  bias, side_bias = _bias(2, 1, False), _bias(2, 2, False)
  full = jax.jit(lambda: longt5.transient_global_attention(
      q, k, v, side_k, side_v, block_ids=ids, global_valid=gvalid,
      local_radius=RADIUS, global_block_size=GROUP, causal=True,
      position_bias=bias, side_position_bias=side_bias))()
  step = jax.jit(lambda q_t, t: longt5.transient_global_step(
      q_t, k, v, side_k, side_v, index=t, local_radius=RADIUS,
      global_block_size=GROUP, position_bias=bias, side_position_bias=side_bias))
  for t in range(13):
    np.testing.assert_allclose(step(q[:, t:t + 1], t)[:, 0], full[:, t],
                               atol=1e-5, rtol=1e-5)


def test_global_block_ids_match_transformers():
  torch = pytest.importorskip('torch')
  modeling = pytest.importorskip('transformers.models.longt5.modeling_longt5')
  rng = np.random.default_rng(0)
  for length, block in ((23, 4), (16, 16), (40, 16), (7, 16)):
    mask = (np.arange(length)[None] < rng.integers(1, length + 1, (4, 1)))
    want_ids, want_segments = modeling._make_global_fixed_block_ids(
        torch.tensor(mask, dtype=torch.float32), block)
    ids, valid = jax.jit(longt5.global_block_ids, static_argnums=1)(
        jnp.asarray(mask), block)
    np.testing.assert_array_equal(np.asarray(ids), want_ids.numpy())
    np.testing.assert_array_equal(np.asarray(valid), want_segments.numpy() > 0)
    hidden = rng.normal(size=(4, length, 3)).astype(np.float32)
    want_sums = modeling._create_global_aggregates(
        torch.tensor(hidden), want_ids, length // block)
    sums = jax.jit(longt5.global_aggregates, static_argnums=2)(
        jnp.asarray(hidden), ids, length // block)
    np.testing.assert_allclose(np.asarray(sums), want_sums.numpy(), atol=1e-5)

"""LongT5 transient-global attention: blockwise vs a dense oracle and vs transformers.

The dense oracle below builds the full [length, length + globals] logits the
blockwise code avoids; transformers' own functions are the oracle for the group
ids (orphan tokens, padding) and the sums (that test skips without torch).
Causality of the causal variant, with global tokens made from the hidden states,
is tested through gradients at the network level (tests/networks).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax import attention
from fovea_jax.attention import common
from fovea_jax.attention import longt5

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

RADIUS, GROUP = 3, 4


def _bias(heads, seed, bidirectional=True):
  table = np.random.default_rng(seed).normal(size=(32, heads)).astype(np.float32)
  return attention.RelativePositionBias(jnp.asarray(table),
                                       bidirectional=bidirectional)


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


def _case(length, valid_len, seed=0):
  """numpy inputs (eager jnp ops on new shapes compile one by one: slow)."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
  num_globals = length // GROUP
  key_mask = np.arange(length)[None] < np.array([[length], [valid_len]])
  # k, v with one head for q's two: grouped-query attention.
  return (normal(2, length, 2, 8), normal(2, length, 1, 8),
          normal(2, length, 1, 8), normal(2, num_globals, 1, 8),
          normal(2, num_globals, 1, 8), key_mask)


IMPLEMENTATIONS = {
    'blockwise': longt5.transient_global_attention_reference,
    'xla': functools.partial(longt5.transient_global_attention,
                             implementation='xla'),
}


@pytest.mark.parametrize('implementation', sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize('length,valid_len,causal', [
    (23, 17, False),  # orphan tokens, padding, a partial last local block
    (23, 17, True),
    (16, 16, False),  # exact multiples of both block sizes
    (3, 2, True),     # no global token at all
    (70, 61, False),  # several query blocks and groups; orphans; padding
    (70, 70, True),
])
def test_equals_dense_oracle_with_gradients(length, valid_len, causal,
                                            implementation):
  """Forward and gradients (q, k, v, side k/v, both bias tables) at the real
  positions, float32, atol = rtol = 1e-5 (forward) and 1e-4 (gradients)."""
  q, k, v, side_k, side_v, mask = _case(length, valid_len)
  bias = _bias(2, 1, bidirectional=not causal)
  side_bias = _bias(2, 2, bidirectional=not causal)
  real = np.asarray(mask)
  cotangent = np.random.default_rng(3).normal(size=q.shape).astype(np.float32)
  cotangent = jnp.asarray(cotangent * real[:, :, None, None])
  attend = IMPLEMENTATIONS[implementation]

  def run(fn, q, k, v, side_k, side_v, table, side_table):
    ids, gvalid = longt5.global_block_ids(mask, GROUP, causal=causal)
    pb = attention.RelativePositionBias(table, bidirectional=not causal)
    spb = attention.RelativePositionBias(side_table, bidirectional=not causal)
    if fn is None:
      return _dense_oracle(q, k, v, side_k, side_v, ids, gvalid, mask, pb, spb,
                           causal)
    return fn(q, k, v, side_k, side_v, block_ids=ids, global_valid=gvalid,
              local_radius=RADIUS, global_block_size=GROUP, causal=causal,
              key_mask=mask, position_bias=pb, side_position_bias=spb)

  args = (q, k, v, side_k, side_v, bias.table, side_bias.table)

  @jax.jit
  def both(*args):
    outputs, grads = [], []
    for fn in (attend, None):
      out = run(fn, *args)
      outputs.append(out)
      grads.append(jax.grad(lambda *a: jnp.sum(run(fn, *a) * cotangent),
                            argnums=tuple(range(7)))(*args))
    return outputs, grads

  (got, want), (got_grads, want_grads) = both(*args)
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real],
                             atol=1e-5, rtol=1e-5)
  assert np.all(np.isfinite(np.asarray(got)))
  for name, g, w in zip(('q', 'k', 'v', 'side_k', 'side_v', 'bias table',
                         'side bias table'), got_grads, want_grads):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-4,
                               rtol=1e-4, err_msg=name)


def test_step_equals_full_causal_pass():
  q, k, v, side_k, side_v, mask = _case(13, 13)
  bias, side_bias = _bias(2, 1, False), _bias(2, 2, False)

  @jax.jit
  def full_pass():
    ids, gvalid = longt5.global_block_ids(mask, GROUP, causal=True)
    return longt5.transient_global_attention(
        q, k, v, side_k, side_v, block_ids=ids, global_valid=gvalid,
        local_radius=RADIUS, global_block_size=GROUP, causal=True,
        position_bias=bias, side_position_bias=side_bias)

  full = full_pass()
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
  for length, block in ((23, 4), (7, 16)):  # orphans + padding; no globals
    mask = (np.arange(length)[None] < rng.integers(1, length + 1, (4, 1)))
    want_ids, want_segments = modeling._make_global_fixed_block_ids(
        torch.tensor(mask, dtype=torch.float32), block)
    ids, valid = jax.jit(longt5.global_block_ids, static_argnums=1)(mask, block)
    np.testing.assert_array_equal(np.asarray(ids), want_ids.numpy())
    np.testing.assert_array_equal(np.asarray(valid), want_segments.numpy() > 0)
    hidden = rng.normal(size=(4, length, 3)).astype(np.float32)
    want_sums = modeling._create_global_aggregates(
        torch.tensor(hidden), want_ids, length // block)
    sums = jax.jit(longt5.global_aggregates, static_argnums=2)(
        hidden, ids, length // block)
    np.testing.assert_allclose(np.asarray(sums), want_sums.numpy(), atol=1e-5)


def _compiled_peak_bytes(length):
  heads, dim = 4, 32
  x = jax.ShapeDtypeStruct((1, length, heads, dim), jnp.float32)
  hidden = jax.ShapeDtypeStruct((1, length, 2, heads, dim), jnp.float32)
  mask = jnp.ones((1, length), bool)

  def loss(q, k, v, hidden):
    ids, global_valid = longt5.global_block_ids(mask, GROUP)
    # The side K/V as the layer makes them: group sums of the hidden states
    # (standing in for their projection, which is per token).
    sums = longt5.global_aggregates(hidden.reshape(1, length, -1), ids,
                                    length // GROUP)
    side_k, side_v = jnp.split(sums.reshape(1, -1, 2, heads, dim), 2, axis=2)
    return jnp.sum(longt5.transient_global_attention(
        q, k, v, side_k[:, :, 0], side_v[:, :, 0], block_ids=ids,
        global_valid=global_valid, local_radius=RADIUS,
        global_block_size=GROUP, side_position_bias=_bias(heads, 1),
        implementation='xla'))

  analysis = jax.jit(jax.grad(loss, (0, 1, 2, 3))).lower(
      x, x, x, hidden).compile().memory_analysis()
  return analysis.temp_size_in_bytes + analysis.output_size_in_bytes


def test_global_scores_and_sums_are_linear_in_memory():
  """XLA's buffer assignment of forward+backward: 16x the length (and 16x
  the globals) takes about 16x the memory (measured 16.0x), not the 256x of
  `[length, globals]` scores or of a one-hot of tokens by groups (39x with
  that one-hot, measured)."""
  assert _compiled_peak_bytes(16384) < 24 * _compiled_peak_bytes(1024)

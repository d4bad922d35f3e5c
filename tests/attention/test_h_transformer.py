"""H-Transformer-1D: XLA path == dense oracle (forward, gradients), the level
partition, causality through gradients, padding, the module and its networks."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.linen import partitioning as nn_partitioning

from fovea_jax.attention import dense as dense_attention
from fovea_jax import networks
from fovea_jax.layers import schemes
from fovea_jax.layers.schemes import base
from fovea_jax.layers.schemes import h_transformer as ht
from tests.attention import helpers
from tests.networks.configs import tiny_config

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow


def _table(seed, num_clusters, heads=2):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=(ht.num_bias_positions(num_clusters), heads)),
                     jnp.float32)


def _run(implementation, num_clusters, causal, key_mask):
  """Compiled whole (op-by-op dispatch of the many small ops costs far more)."""
  attend = (ht.h_transformer_reference if implementation == 'reference' else
            ht.h_transformer_attention)
  fn = jax.jit(lambda q, k, v, table, key_mask: attend(
      q, k, v, table, num_clusters=num_clusters, causal=causal, key_mask=key_mask))
  return lambda q, k, v, _, table: fn(q, k, v, table, key_mask)


def test_levels_halve_until_two_blocks_remain():
  assert ht.hierarchy_blocks(64, 4) == (16, 8, 4, 2)  # flaxformer: log2(64/4) levels
  assert ht.hierarchy_blocks(37, 4) == (10, 5, 3, 2)
  assert ht.hierarchy_blocks(3, 4) == (1,)


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('length,num_clusters', [(37, 4), (16, 2)])
def test_every_pair_is_scored_at_exactly_one_level(length, num_clusters, causal):
  """Zero scores and bias, one-hot values: the XLA path's output row is each
  key's weight, uniform over the allowed keys iff the levels partition them."""
  v = jnp.eye(length)[None, :, None, :]
  q = jnp.zeros_like(v)
  mask = np.random.default_rng(0).random((1, length)) > 0.3
  table = jnp.zeros((ht.num_bias_positions(num_clusters), 1))
  out = _run('xla', num_clusters, causal, jnp.asarray(mask))(q, q, v, None, table)
  allowed = np.broadcast_to(mask, (length, length)).copy()
  if causal:
    allowed &= np.tril(np.ones((length, length), bool))
  expected = allowed / np.maximum(allowed.sum(1, keepdims=True), 1)
  np.testing.assert_allclose(out[0, :, 0], expected, atol=1e-6)


def test_oracle_levels_follow_the_hand_count():
  """n = 8, nc = 2: token 0 sees tokens 0-3 exactly and {4,5}, {6,7} as pairs;
  token 5 sees 2-7 exactly and {0,1} as a pair."""
  levels = ht.pair_levels(8, 2)
  np.testing.assert_array_equal(levels[0], [0, 0, 0, 0, 1, 1, 1, 1])
  np.testing.assert_array_equal(levels[5], [1, 1, 0, 0, 0, 0, 0, 0])


def test_oracle_by_hand():
  """Token 0 of n = 8, nc = 2, bidirectional: one softmax over its four exact
  keys and two level-1 pairs, scored with the mean query of tokens {0, 1}."""
  q, k, v, _, _ = helpers.random_inputs(4, batch=1, length=8, heads=1, mask=False,
                                        bias=False)
  table = _table(4, 2, heads=1)
  out = ht.h_transformer_reference(q, k, v, table, num_clusters=2)
  q, k, v, table = (np.asarray(x, np.float64) for x in (q[0, :, 0], k[0, :, 0],
                                                       v[0, :, 0], table[:, 0]))
  fine = [q[0] @ k[j] + table[j + 3] for j in range(4)]
  q_bar = q[:2].mean(0)
  coarse = [q_bar @ k[2 * g:2 * g + 2].mean(0) + table[g + 3] for g in (2, 3)]
  logits = np.array(fine + [coarse[0]] * 2 + [coarse[1]] * 2)
  weights = np.exp(logits - logits.max())
  np.testing.assert_allclose(out[0, 0, 0], weights @ v / weights.sum(), rtol=1e-5,
                             atol=1e-6)


def test_one_block_is_dense_attention():
  """With num_clusters >= n there is one block: dense attention plus the bias."""
  q, k, v, key_mask, _ = helpers.random_inputs(6, length=11)
  table = jnp.zeros((ht.num_bias_positions(12), 2))
  dense = dense_attention.dot_product_attention_reference(q, k, v, scale=1.0,
                                                    key_mask=key_mask)
  for implementation in ('xla', 'reference'):
    np.testing.assert_allclose(
        _run(implementation, 12, False, key_mask)(q, k, v, None, table), dense,
        **helpers.FORWARD_TOL)


CASES = [  # (length, num_clusters, kv_heads, masked, causal): block multiples
    # and not, GQA, shorter than a block, one token
    (37, 4, None, True, False), (37, 4, None, True, True), (45, 6, 1, True, True),
    (32, 2, None, False, False), (3, 4, None, True, False), (1, 2, None, False, True)]


@pytest.mark.parametrize('length,num_clusters,kv_heads,masked,causal', CASES)
def test_xla_matches_reference_forward_and_grads(length, num_clusters, kv_heads,
                                                 masked, causal):
  """Tolerances: helpers.FORWARD_TOL (2e-5) and GRAD_TOL (1e-4), float32;
  gradients wrt q, k, v and the bias table."""
  q, k, v, key_mask, _ = helpers.random_inputs(length, length=length,
                                               kv_heads=kv_heads, mask=masked,
                                               bias=False)
  table = _table(length, num_clusters)
  helpers.assert_same(_run('reference', num_clusters, causal, key_mask),
                      _run('xla', num_clusters, causal, key_mask), q, k, v, None,
                      extra=(table,))


@pytest.mark.parametrize('implementation', ['xla', 'reference'])
def test_causal_no_gradient_from_the_future(implementation):
  n, nc = 29, 4
  q, k, v, key_mask, _ = helpers.random_inputs(7, length=n, bias=False)
  table = _table(7, nc)
  run = _run(implementation, nc, True, key_mask)
  grad_at = jax.jit(jax.grad(lambda q, k, v, t: run(q, k, v, None, table)[:, t].sum(),
                             argnums=(0, 1, 2)))
  for t in (0, 5, 13, 28):
    for name, g in zip('qkv', grad_at(q, k, v, t)):
      assert np.all(np.asarray(g)[:, t + 1:] == 0), (name, t)
      if t and name != 'q':  # a query row reads q at t and its groups' first
        assert np.any(np.asarray(g)[:, :t] != 0), (name, t)


@pytest.mark.parametrize('causal', [False, True])
def test_trailing_padding_changes_no_real_output(causal):
  """A pair's level depends only on i, j and nc, and pooled means skip padding:
  padded and unpadded inputs give the same real outputs."""
  n, real, nc = 40, 27, 4
  q, k, v, _, _ = helpers.random_inputs(8, length=n, bias=False)
  table = _table(8, nc)
  mask = jnp.asarray(np.arange(n)[None] < real).repeat(2, 0)
  padded = _run('xla', nc, causal, mask)(q, k, v, None, table)
  unpadded = _run('xla', nc, causal, None)(q[:, :real], k[:, :real], v[:, :real],
                                           None, table)
  np.testing.assert_allclose(padded[:, :real], unpadded, **helpers.FORWARD_TOL)


def test_no_valid_key_gives_zeros():
  q, k, v, _, _ = helpers.random_inputs(9, length=10, bias=False)
  out = _run('xla', 2, False, jnp.zeros((2, 10), bool))(q, k, v, None,
                                                        _table(9, 2))
  np.testing.assert_array_equal(out, 0.0)


def test_attended_pairs_count_the_computed_scores():
  scheme = ht.HTransformer1D(num_clusters=4)
  # 64 tokens: blocks (16, 8, 4, 2); level 0 scores 3 blocks, coarser ones 2
  # (causal: 2 and 1), 4 x 4 entries per block pair.
  assert scheme.attended_pairs(64, False) == 16 * 4 * 12 + (8 + 4 + 2) * 4 * 8
  assert scheme.attended_pairs(64, True) == 16 * 4 * 8 + (8 + 4 + 2) * 4 * 4
  assert scheme.layout(64, False) is None
  # Linear in the length: doubling n adds one level of 2 blocks.
  assert scheme.attended_pairs(4096, False) < 2.1 * scheme.attended_pairs(2048,
                                                                          False)


def _apply_scheme(scheme, inputs, length=12):
  q, k, v, key_mask, _ = helpers.random_inputs(10, length=length, bias=False)
  inputs = base.AttentionInputs(key_mask=key_mask, **inputs)
  variables = scheme.init(jax.random.PRNGKey(0), q, k, v, inputs)
  return variables, scheme.apply(variables, q, k, v, inputs), (q, k, v, key_mask)


def test_module_owns_its_bias_and_runs_both_paths():
  scheme = schemes.get_scheme('h_transformer').for_layer(0, 1, True)(name='s')
  assert isinstance(scheme, schemes.HTransformer1D)
  variables, out, (q, k, v, key_mask) = _apply_scheme(
      scheme, dict(implementation='reference'))
  table = variables['params']['hierarchical_position_bias']
  assert table.shape == (ht.num_bias_positions(16), 2)
  axes = nn_partitioning.get_axis_names(variables['params_axes'])
  assert tuple(axes['hierarchical_position_bias']) == ('relpos_buckets', 'heads')
  expected = ht.h_transformer_attention(q, k, v, table, num_clusters=16,
                                        causal=True, key_mask=key_mask)
  np.testing.assert_allclose(out, expected, **helpers.FORWARD_TOL)


@pytest.mark.parametrize('inputs,message', [
    (dict(decode=True), 'no incremental decoding'),
    (dict(implementation='pallas'), 'no Pallas kernel'),
    (dict(q_segment_ids=jnp.ones((2, 12), jnp.int32),
          kv_segment_ids=jnp.ones((2, 12), jnp.int32)), 'packed examples'),
])
def test_unsupported_inputs_are_refused(inputs, message):
  with pytest.raises(ValueError, match=message):
    _apply_scheme(ht.HTransformer1D(num_clusters=4), inputs)


def test_odd_num_clusters_is_refused():
  with pytest.raises(ValueError, match='num_clusters must be even'):
    _apply_scheme(ht.HTransformer1D(num_clusters=3), {})


def _train(model, batch, steps=8):
  """Adam on one batch; returns the losses and the first step's gradients."""
  init = jax.jit(lambda rng: model.init(rng, *batch['args'], enable_dropout=False))
  params = init(jax.random.PRNGKey(0))['params']
  optimizer = optax.adam(1e-2)

  def loss_fn(params):
    logits = model.apply({'params': params}, *batch['args'], enable_dropout=False)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, batch['targets']).mean()

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss, grads

  state = optimizer.init(params)
  losses, first_grads = [], None
  for _ in range(steps):
    params, state, loss, grads = step(params, state)
    losses.append(float(loss))
    first_grads = first_grads or grads
  return losses, first_grads


def _bias_grads(grads):
  found = [g for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]
           if 'hierarchical_position_bias' in jax.tree_util.keystr(path)]
  assert found
  return found


SCHEME = ht.HTransformer1D(num_clusters=4)  # 19 tokens: 5 blocks, 3 levels


def test_trains_in_a_decoder_only_lm():
  model = networks.DecoderOnly(tiny_config(SCHEME, num_decoder_layers=1))
  tokens = np.random.default_rng(2).integers(1, 40, (2, 19))
  losses, grads = _train(model, dict(args=(tokens[:, :-1], tokens[:, :-1]),
                                     targets=tokens[:, 1:]))
  assert losses[-1] < 0.8 * losses[0], losses
  assert all(np.any(np.asarray(g) != 0) for g in _bias_grads(grads))


def test_trains_in_an_encoder_decoder():
  model = networks.EncoderDecoder(tiny_config(SCHEME, num_encoder_layers=1,
                                              num_decoder_layers=1))
  rng = np.random.default_rng(3)
  enc = rng.integers(1, 40, (2, 19))
  enc[1, 13:] = 0  # padding
  targets = rng.integers(1, 40, (2, 5))
  inputs = np.concatenate([np.zeros((2, 1), int), targets[:, :-1]], axis=1)
  losses, grads = _train(model, dict(args=(enc, inputs, targets),
                                     targets=targets))
  assert losses[-1] < 0.8 * losses[0], losses
  assert all(np.any(np.asarray(g) != 0) for g in _bias_grads(grads))

"""Encoder-decoder: every scheme runs and ignores padding; cached decoding;
packing; logical axes on every parameter; T5X-style init."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.linen import partitioning as nn_partitioning

from fovea_jax import networks
from tests.networks.configs import TINY_SCHEMES, random_variables, tiny_config

ENC_LEN, DEC_LEN, REAL = 21, 6, 15


def _model(scheme, **overrides):
  # One layer per stack compiles fastest; MASFormer needs two for its schedule.
  layers = 2 if scheme.startswith('masformer') else 1
  overrides = dict(num_encoder_layers=layers, num_decoder_layers=1, **overrides)
  model = networks.EncoderDecoder(tiny_config(scheme, **overrides))
  enc = jnp.ones((2, ENC_LEN), jnp.float32)  # T5X initialises with float ones
  dec = jnp.ones((2, DEC_LEN), jnp.float32)
  return model, random_variables(model, enc, dec, dec, enable_dropout=False)


def _batch():
  enc = np.array(jax.random.randint(jax.random.PRNGKey(1), (2, ENC_LEN), 1, 40))
  enc[1, REAL:] = 0  # padding in the second example
  targets = np.array(jax.random.randint(jax.random.PRNGKey(2), (2, DEC_LEN), 1,
                                        40))
  inputs = np.concatenate([np.zeros((2, 1), int), targets[:, :-1]], axis=1)
  return jnp.asarray(enc), jnp.asarray(inputs), jnp.asarray(targets)


def _encode(model, variables, tokens, segments=None):
  return model.apply(variables, tokens, segments, enable_dropout=False,
                     method=networks.EncoderDecoder.encode)


@pytest.mark.parametrize('scheme', sorted(TINY_SCHEMES))
def test_every_scheme_encodes_and_ignores_padding(scheme):
  """Trailing padding leaves real tokens' encodings unchanged (the decoder is
  dense for every scheme; test_cached_decoding and the parity tests run it)."""
  model, variables = _model(scheme)
  enc, _, _ = _batch()
  padded, unpadded = jax.jit(lambda v: (
      _encode(model, v, enc[1:]), _encode(model, v, enc[1:, :REAL])))(variables)
  assert padded.shape == (1, ENC_LEN, 16) and np.all(np.isfinite(padded))
  if getattr(TINY_SCHEMES[scheme], 'edge', None) == 'drop':
    # By design (the authors' code): nodes cut by the sequence end are dropped,
    # so where the end is, padding included, changes what a query sees.
    assert not np.allclose(padded[:, :REAL], unpadded, atol=1e-5)
    return
  np.testing.assert_allclose(padded[:, :REAL], unpadded, atol=1e-5)


def test_cached_decoding_equals_teacher_forcing():
  model, variables = _model('fovea')
  enc, inputs, targets = _batch()
  full = jax.jit(lambda v: model.apply(v, enc, inputs, targets,
                                       enable_dropout=False))(variables)
  cache_shapes = jax.eval_shape(functools.partial(
      model.init, enable_dropout=False, decode=True), jax.random.PRNGKey(0),
                                enc, inputs, targets)['cache']
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), cache_shapes)

  @jax.jit
  def step(cache, token):
    encoded = _encode(model, variables, enc)
    return model.apply({**variables, 'cache': cache}, encoded, enc, token, token,
                       enable_dropout=False, decode=True, mutable=['cache'],
                       method=networks.EncoderDecoder.decode)

  stepped = []
  for t in range(DEC_LEN):
    logits, mutated = step(cache, inputs[:, t:t + 1])
    cache = mutated['cache']
    stepped.append(logits[:, 0])
  np.testing.assert_allclose(np.stack(stepped, 1), full, atol=2e-5, rtol=2e-5)
  for path, leaf in jax.tree_util.tree_leaves_with_path(cache):
    if 'cache_index' not in jax.tree_util.keystr(path):
      assert leaf.shape[0] == 2, path  # batch-major: beam search can expand it


def test_packing_separates_examples_and_sparse_schemes_refuse_it():
  enc, inputs, targets = _batch()
  enc = enc.at[1].set(enc[0])
  segments = jnp.asarray(np.repeat([[1] * 10 + [2] * 11], 2, axis=0))
  dec_segments = jnp.asarray(np.repeat([[1] * 3 + [2] * 3], 2, axis=0))
  model, variables = _model('dense')
  packed, alone = jax.jit(lambda v: (_encode(model, v, enc, segments),
                                     _encode(model, v, enc[:, 10:])))(variables)
  np.testing.assert_allclose(packed[:, 10:], alone, atol=1e-5)
  for scheme in ('fovea', 'longt5_tglobal', 'masformer'):
    model, variables = _model(scheme)
    with pytest.raises(ValueError, match='does not support packed examples'):
      jax.eval_shape(lambda v: model.apply(v, enc, inputs, targets, segments,
                                           dec_segments, enable_dropout=False),
                     variables)


def test_init_gives_logical_axes_and_t5_scales():
  """Real init: every param named by logical axes; T5's init scales; learned FMA
  filters start as window means."""
  model = networks.EncoderDecoder(tiny_config(
      'fma_learned', emb_dim=64, num_heads=4, head_dim=16, num_encoder_layers=1,
      num_decoder_layers=1))
  ones = jnp.ones((2, ENC_LEN), jnp.float32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), ones, ones[:, :4],
                                  ones[:, :4])
  axes = nn_partitioning.get_axis_names(variables['params_axes'])
  named = dict(jax.tree_util.tree_leaves_with_path(
      axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)))
  params = jax.tree_util.tree_leaves_with_path(variables['params'])
  assert len(named) == len(params)
  for path, leaf in params:
    assert len(named[path]) == leaf.ndim, path
    assert all(isinstance(a, str) for a in named[path]), path
  attention = variables['params']['encoder']['layers_0']['attention']
  # Query std: 1/sqrt(emb * head_dim) (T5 folds 1/sqrt(d) into the query).
  np.testing.assert_allclose(np.std(attention['query']['kernel']),
                             1 / np.sqrt(64 * 16), rtol=0.1)
  np.testing.assert_allclose(np.std(attention['key']['kernel']), 1 / np.sqrt(64),
                             rtol=0.1)
  filters = attention['scheme']['key_filter_1']      # [group 4, head_dim, rank 2]
  np.testing.assert_array_equal(filters[:, 0, :],
                                [[.5, 0], [.5, 0], [0, .5], [0, .5]])

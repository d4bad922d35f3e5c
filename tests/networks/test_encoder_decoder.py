"""Encoder-decoder: every scheme runs, ignores padding; cached decoding; packing."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.linen import partitioning as nn_partitioning

from fovea_jax import networks
from tests.networks.configs import TINY_SCHEMES, tiny_config

ENC_LEN, DEC_LEN, REAL = 21, 6, 15


def _init(config, dec_len=DEC_LEN, decode=False):
  model = networks.EncoderDecoder(config)
  enc = jnp.ones((2, ENC_LEN), jnp.float32)  # T5X initialises with float ones
  dec = jnp.ones((2, dec_len), jnp.float32)
  return model, jax.jit(functools.partial(
      model.init, enable_dropout=False, decode=decode))(
          jax.random.PRNGKey(0), enc, dec, dec)


def _batch():
  enc = np.array(jax.random.randint(jax.random.PRNGKey(1), (2, ENC_LEN), 1, 40))
  enc[1, REAL:] = 0  # padding in the second example
  targets = np.array(jax.random.randint(jax.random.PRNGKey(2), (2, DEC_LEN), 1,
                                        40))
  inputs = np.concatenate([np.zeros((2, 1), int), targets[:, :-1]], axis=1)
  return jnp.asarray(enc), jnp.asarray(inputs), jnp.asarray(targets)


def _encode(model, variables, tokens, segments=None):
  return jax.jit(lambda v, t, s: model.apply(
      v, t, s, enable_dropout=False, method=networks.EncoderDecoder.encode))(
          variables, tokens, segments)


@pytest.mark.parametrize('scheme', sorted(TINY_SCHEMES))
def test_every_scheme_runs_and_ignores_padding(scheme):
  """Trailing padding leaves real tokens' encodings and the logits unchanged."""
  model, variables = _init(tiny_config(scheme))
  enc, inputs, targets = _batch()
  logits = jax.jit(lambda v, *b: model.apply(v, *b, enable_dropout=False))(
      variables, enc, inputs, targets)
  assert logits.shape == (2, DEC_LEN, 40) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  unpadded = _encode(model, variables, enc[1:, :REAL])
  padded = _encode(model, variables, enc[1:])
  np.testing.assert_allclose(padded[:, :REAL], unpadded, atol=1e-5)


def test_cached_decoding_equals_teacher_forcing():
  config = tiny_config('fovea')
  model, variables = _init(config)
  enc, inputs, targets = _batch()
  full = model.apply(variables, enc, inputs, targets, enable_dropout=False)
  _, cache_vars = _init(config, decode=True)
  encoded = _encode(model, variables, enc)
  step = jax.jit(lambda cache, token: model.apply(
      {'params': variables['params'], 'cache': cache}, encoded, enc, token, token,
      enable_dropout=False, decode=True, mutable=['cache'],
      method=networks.EncoderDecoder.decode))
  cache, stepped = cache_vars['cache'], []
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
  model, variables = _init(tiny_config('dense'))
  packed = _encode(model, variables, enc, segments)
  alone = _encode(model, variables, enc[:, 10:])
  np.testing.assert_allclose(packed[:, 10:], alone, atol=1e-5)
  model, variables = _init(tiny_config('fovea'))
  with pytest.raises(ValueError, match='does not support packed examples'):
    model.apply(variables, enc, inputs, targets, segments, dec_segments,
                enable_dropout=False)


def test_every_param_has_logical_axes():
  model = networks.EncoderDecoder(tiny_config('fma_learned'))
  ones = jnp.ones((2, ENC_LEN), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ones,
                                                ones[:, :4], ones[:, :4]))
  axes = nn_partitioning.get_axis_names(variables['params_axes'])
  params = jax.tree_util.tree_leaves_with_path(variables['params'])
  named = dict(jax.tree_util.tree_leaves_with_path(
      axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)))
  assert len(named) == len(params)
  for path, leaf in params:
    spec = named[path]
    assert len(spec) == leaf.ndim and all(isinstance(a, str) for a in spec), path

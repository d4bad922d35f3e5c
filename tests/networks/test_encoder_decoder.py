"""Encoder-decoder: every scheme runs and ignores padding; cached decoding;
packing; logical axes on every parameter; T5 init scales."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.linen import partitioning as nn_partitioning

from fovea_jax import decoding
from fovea_jax import layers
from fovea_jax import networks
from tests.networks.configs import TINY_SCHEMES, random_variables, tiny_config

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

ENC_LEN, DEC_LEN, REAL = 21, 6, 15


def _model(scheme, **overrides):
  # One layer per stack compiles fastest; MASFormer needs two for its schedule.
  layers = 2 if scheme.startswith('masformer') else 1
  overrides = dict(num_encoder_layers=layers, num_decoder_layers=1, **overrides)
  model = networks.EncoderDecoder(tiny_config(scheme, **overrides))
  enc = np.ones((2, ENC_LEN), np.float32)  # T5X initialises with float ones
  dec = np.ones((2, DEC_LEN), np.float32)
  return model, random_variables(model, enc, dec, dec, enable_dropout=False)


def _batch():
  rng = np.random.default_rng(1)
  enc = rng.integers(1, 40, (2, ENC_LEN))
  enc[1, REAL:] = 0  # padding in the second example
  targets = rng.integers(1, 40, (2, DEC_LEN))
  inputs = np.concatenate([np.zeros((2, 1), int), targets[:, :-1]], axis=1)
  return enc, inputs, targets


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
  cache_shapes = jax.eval_shape(functools.partial(
      model.init, enable_dropout=False, decode=True), jax.random.PRNGKey(0),
                                enc, inputs, targets)['cache']
  cache = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), cache_shapes)

  @jax.jit
  def teacher_forced_and_decoded(cache):
    encoded = _encode(model, variables, enc)

    def step(cache, token):
      logits, mutated = model.apply(
          {**variables, 'cache': cache}, encoded, enc, token[:, None],
          token[:, None], enable_dropout=False, decode=True, mutable=['cache'],
          method=networks.EncoderDecoder.decode)
      return mutated['cache'], logits[:, 0]

    cache, stepped = jax.lax.scan(step, cache, inputs.T)
    full = model.apply(variables, enc, inputs, targets, enable_dropout=False)
    return full, jnp.swapaxes(stepped, 0, 1), cache

  full, stepped, cache = teacher_forced_and_decoded(cache)
  np.testing.assert_allclose(stepped, full, atol=2e-5, rtol=2e-5)
  for path, leaf in jax.tree_util.tree_leaves_with_path(cache):
    name = jax.tree_util.keystr(path)
    if 'cache_index' not in name and 'static_kv_ready' not in name:
      assert leaf.shape[0] == 2, path  # batch-major: beam search can expand it


@pytest.mark.parametrize('mode', ['lazy', 'expanded', 'filled'])
def test_cross_attention_keys_values_are_cached_once_per_example(mode):
  """Decoding rows `[e0, e0, e0, e1, e1, e1]` (3 decodes per example) against
  the per-example encoding projected once into the cache gives the logits of a
  full pass with the encoding copied per row. `lazy`: the cache is created
  with `static_kv_ready` and projected at the first step; `expanded`: as lazy,
  but the cache and the encoding are copied per row before the first step
  (T5X's decoding does that), so each row is its own example; `filled`: the
  cache is created from the real encoding and its flags dropped
  (`mark_static_kv_filled`, as EncoderDecoderModel decodes), so steps only
  read it."""
  model, variables = _model('dense')
  enc, _, _ = _batch()
  decodes = 3
  tokens = np.arange(1, 2 * decodes + 1).reshape(-1, 1)  # every row differs
  rows_enc = np.repeat(enc, decodes, axis=0)

  @jax.jit
  def step_and_full(variables):
    encoded = _encode(model, variables, enc)
    _, created = model.apply(
        variables, encoded, enc, tokens[:2], tokens[:2], enable_dropout=False,
        decode=True, mutable=['cache'], method=networks.EncoderDecoder.decode)
    cache, step_encoded, step_enc = created['cache'], encoded, enc
    if mode == 'expanded':  # every leaf with a batch axis, as T5X does
      cache = jax.tree.map(lambda x: decoding.flat_batch_beam_expand(
          x, decodes) if x.ndim else x, cache)
      step_encoded, step_enc = jnp.repeat(encoded, decodes, 0), rows_enc
    else:
      if mode == 'filled':
        cache = decoding.mark_static_kv_filled(cache)
      cache = decoding.cache_map(
          lambda x: decoding.flat_batch_beam_expand(x, decodes), cache)
    logits, stepped = model.apply(
        {**variables, 'cache': cache}, step_encoded, step_enc, tokens, tokens,
        enable_dropout=False, decode=True, mutable=['cache'],
        method=networks.EncoderDecoder.decode)
    full = model.apply(variables, jnp.repeat(encoded, decodes, 0), rows_enc,
                       tokens, tokens, enable_dropout=False,
                       method=networks.EncoderDecoder.decode)
    return logits, full, cache, stepped['cache']

  logits, full, before, after = step_and_full(variables)
  np.testing.assert_allclose(logits, full, atol=2e-5, rtol=2e-5)
  cross = after['decoder']['layers_0']['encoder_decoder_attention']
  # One copy per example unless the caller copied it per row.
  assert cross['cached_static_key'].shape[0] == (
      2 * decodes if mode == 'expanded' else 2)
  if mode == 'filled':
    assert 'static_kv_ready' not in cross
    created = before['decoder']['layers_0']['encoder_decoder_attention']
    for part in ('cached_static_key', 'cached_static_value'):
      np.testing.assert_array_equal(cross[part], created[part])
  else:
    assert bool(cross['static_kv_ready'])


# Packed encodings equal each example encoded alone: no pattern here depends
# on where an example starts (block-local blocks and TGlobal's groups count
# from its start).
PACK_AS_ALONE = ('dense', 'longt5_local', 'longt5_tglobal', 'masformer',
                 'masformer_block')
# Packed without leaks, but pooled windows sit where the packed sequence puts
# them, so an example's encoding differs from its encoding alone.
PACK_WITHOUT_LEAKS = ('fovea', 'fovea_options', 'fma', 'fma_learned')


@pytest.mark.parametrize('scheme', PACK_AS_ALONE + PACK_WITHOUT_LEAKS)
def test_packed_encoder(scheme):
  """Two examples packed in one row (10 + 11 tokens): the second example's
  encoding is its encoding alone (PACK_AS_ALONE), or at least does not change
  when the first example's tokens do (PACK_WITHOUT_LEAKS)."""
  enc, inputs, targets = _batch()
  enc[1] = enc[0]
  segments = np.repeat([[1] * 10 + [2] * 11], 2, axis=0)
  model, variables = _model(scheme)
  other = enc.copy()
  other[:, :10] = (other[:, :10] + 7) % 39 + 1  # a different first example
  packed, changed, alone = jax.jit(lambda v: (
      _encode(model, v, enc, segments), _encode(model, v, other, segments),
      _encode(model, v, enc[:, 10:])))(variables)
  np.testing.assert_allclose(changed[:, 10:], packed[:, 10:], atol=1e-6)
  assert not np.allclose(changed[:, :10], packed[:, :10], atol=1e-3)
  if scheme in PACK_AS_ALONE:
    np.testing.assert_allclose(packed[:, 10:], alone, atol=1e-5)


def test_every_param_has_logical_axes():
  model = networks.EncoderDecoder(tiny_config('fma_learned'))
  ones = np.ones((2, ENC_LEN), np.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), ones,
                             ones[:, :4], ones[:, :4])
  axes = nn_partitioning.get_axis_names(variables['params_axes'])
  named = dict(jax.tree_util.tree_leaves_with_path(
      axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)))
  params = jax.tree_util.tree_leaves_with_path(variables['params'])
  assert len(named) == len(params)
  for path, leaf in params:
    assert len(named[path]) == leaf.ndim, path
    assert all(isinstance(a, str) for a in named[path]), path


def test_attention_init_scales_and_mean_valued_fma_filters():
  """T5 init (one attention layer, compiled): query std 1/sqrt(emb * head_dim)
  (1/sqrt(d) folded in), key 1/sqrt(emb); learned FMA filters start as means."""
  layer = layers.MultiHeadAttention(
      num_heads=4, head_dim=16,
      scheme_factory=TINY_SCHEMES['fma_learned'].for_layer(0, 1, causal=False))
  x = np.ones((1, 8, 64), np.float32)
  params = jax.jit(lambda key: layer.init(key, x, x))(
      jax.random.PRNGKey(0))['params']
  np.testing.assert_allclose(np.std(params['query']['kernel']),
                             1 / np.sqrt(64 * 16), rtol=0.1)
  np.testing.assert_allclose(np.std(params['key']['kernel']), 1 / np.sqrt(64),
                             rtol=0.1)
  filters = params['scheme']['key_filter_1']      # [group 4, head_dim, rank 2]
  np.testing.assert_array_equal(filters[:, 0, :],
                                [[.5, 0], [.5, 0], [0, .5], [0, .5]])

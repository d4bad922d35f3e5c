"""Decoder-only LM, every scheme: cached decoding equals the full pass token by
token, and no output depends on a future token (gradients through the network)."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax import layers
from fovea_jax import networks
from fovea_jax.layers import schemes
from tests.networks.configs import TINY_SCHEMES, random_variables, tiny_config

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

LENGTH = 19  # not a multiple of any block size used


def _zeros_cache(model, batch):
  """The decode cache as init would make it, without compiling init."""
  ones = np.ones((batch, LENGTH), np.float32)
  shapes = jax.eval_shape(functools.partial(
      model.init, enable_dropout=False, decode=True),
                          jax.random.PRNGKey(0), ones, ones)['cache']
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


# Fovea layouts whose far windows are wider than a block (2^p > block_len) or
# do not divide it (block_len 3): decoding sums them from several cells.
WIDE_WINDOWS = {'fovea_block2': schemes.Fovea(block_len=2),
                'fovea_block3': schemes.Fovea(block_len=3)}
# Smeared keys (network.Config.smeared_keys): decoding keeps the last raw key.
SMEARED = {'dense_smeared_keys': 'dense', 'fovea_smeared_keys': 'fovea'}


@pytest.mark.parametrize('scheme', sorted(TINY_SCHEMES) + sorted(WIDE_WINDOWS) +
                         sorted(SMEARED))
def test_cached_decoding_equals_full_pass_and_nothing_leaks(scheme):
  # MASFormer needs two layers for its schedule; one layer compiles faster.
  num_layers = 2 if scheme.startswith('masformer') else 1
  model = networks.DecoderOnly(tiny_config(
      WIDE_WINDOWS.get(scheme, SMEARED.get(scheme, scheme)),
      num_decoder_layers=num_layers, smeared_keys=scheme in SMEARED))
  tokens = np.random.default_rng(1).integers(1, 40, (2, LENGTH))
  ones = np.ones((2, LENGTH), np.float32)  # T5X initialises with float ones
  variables = random_variables(model, ones, ones, enable_dropout=False)

  def logits_from_embeddings(embedded):
    """Logits with the embedding output replaced by `embedded` (for gradients)."""
    def feed(next_fun, args, kwargs, context):
      if isinstance(context.module, layers.Embed) and (
          context.method_name == '__call__'):
        return embedded
      return next_fun(*args, **kwargs)
    with nn.intercept_methods(feed):
      return model.apply(variables, tokens, tokens, enable_dropout=False)

  def decode_step(cache, token):
    logits, mutated = model.apply(
        {'params': variables['params'], 'cache': cache}, token[:, None],
        token[:, None], enable_dropout=False, decode=True, mutable=['cache'])
    return mutated['cache'], logits[:, 0]

  @jax.jit
  def full_pass_jacobian_and_decoding(cache):
    """One compile: the full pass (through the interceptor), its Jacobian
    [t, batch, j, emb] and token-by-token cached decoding."""
    embedded = variables['params']['token_embedder']['embedding'][tokens]
    per_position = lambda e: logits_from_embeddings(e)[0].sum(-1)  # [length]
    _, stepped = jax.lax.scan(decode_step, cache, tokens.T)
    return (logits_from_embeddings(embedded), jax.jacrev(per_position)(embedded),
            jnp.swapaxes(stepped, 0, 1))

  full, jac, stepped = full_pass_jacobian_and_decoding(_zeros_cache(model, 2))
  # Decoding embeds with the real table: agreement also shows the interceptor
  # fed the real embeddings to the full pass.
  np.testing.assert_allclose(stepped, full, atol=2e-5, rtol=2e-5)
  dependence = np.abs(np.asarray(jac)[:, 0]).sum(-1)  # [t, j], batch row 0
  assert np.all(dependence[np.triu_indices(LENGTH, k=1)] == 0.0)
  assert np.all(np.diag(dependence) > 0.0)


def test_smeared_keys_restart_per_packed_example():
  """Two examples packed in one row: with smeared keys, the second example's
  logits are those of the example alone (its first key has no previous)."""
  model = networks.DecoderOnly(tiny_config('dense', num_decoder_layers=2,
                                           smeared_keys=True))
  tokens = np.random.default_rng(2).integers(1, 40, (2, LENGTH))
  ones = np.ones((2, LENGTH), np.float32)
  variables = random_variables(model, ones, ones, enable_dropout=False)
  assert 'key_smear' in str(jax.tree_util.tree_structure(variables['params']))
  segments = np.repeat([[1] * 8 + [2] * (LENGTH - 8)], 2, axis=0)
  positions = np.concatenate([np.arange(8), np.arange(LENGTH - 8)])[None]
  packed, alone = jax.jit(lambda v: (
      model.apply(v, tokens, tokens, segments, np.repeat(positions, 2, 0),
                  enable_dropout=False),
      model.apply(v, tokens[:, 8:], tokens[:, 8:], enable_dropout=False)))(
          variables)
  np.testing.assert_allclose(packed[:, 8:], alone, atol=1e-5, rtol=1e-5)


def test_prefix_lm_sees_the_whole_prefix_and_only_the_past_beyond_it():
  """T5X's decoder_causal_attention: inputs see each other, targets are causal;
  sparse schemes and decoding refuse it clearly."""
  model = networks.DecoderOnly(tiny_config('dense', num_decoder_layers=1))
  length, prefix_len = 9, 4
  tokens = np.random.default_rng(1).integers(1, 40, (1, length))
  prefix = (np.arange(length) < prefix_len)[None].astype(np.int32)
  variables = random_variables(model, tokens, tokens)

  @jax.jit
  def jacobian():
    def logits(embedded):
      def feed(next_fun, args, kwargs, context):
        if isinstance(context.module, layers.Embed) and (
            context.method_name == '__call__'):
          return embedded
        return next_fun(*args, **kwargs)
      with nn.intercept_methods(feed):
        return model.apply(variables, tokens, tokens,
                           decoder_causal_attention=prefix,
                           enable_dropout=False)[0].sum(-1)
    embedded = variables['params']['token_embedder']['embedding'][tokens]
    return jax.jacrev(logits)(embedded)

  dependence = np.abs(np.asarray(jacobian())[:, 0]).sum(-1)  # [t, j]
  t, j = np.indices((length, length))
  expected = (j <= t) | ((t < prefix_len) & (j < prefix_len))
  assert np.all(dependence[expected] > 0.0)
  assert np.all(dependence[~expected] == 0.0)

  ones = np.ones((1, 4), np.int32)
  sparse = networks.DecoderOnly(tiny_config('fovea'))
  sparse_vars = jax.eval_shape(sparse.init, jax.random.PRNGKey(0), ones, ones)
  with pytest.raises(ValueError, match='prefix-LM'):
    jax.eval_shape(lambda v: sparse.apply(v, ones, ones,
                                          decoder_causal_attention=ones),
                   sparse_vars)
  with pytest.raises(ValueError, match='decode=True'):
    model.apply(variables, ones, ones, decoder_causal_attention=ones, decode=True)
  with pytest.raises(ValueError, match='prefill'):
    model.apply(variables, ones, ones, prefill=True)

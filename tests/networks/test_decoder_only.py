"""Decoder-only LM: cached decoding equals the full pass, and nothing leaks."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax import layers
from fovea_jax import networks
from tests.networks.configs import TINY_SCHEMES, tiny_config

LENGTH = 19  # not a multiple of any block size used


def _init(config, length=LENGTH, decode=False):
  model = networks.DecoderOnly(config)
  ones = jnp.ones((2, length), jnp.float32)  # T5X initialises with float ones
  variables = model.init(jax.random.PRNGKey(0), ones, ones, enable_dropout=False,
                         decode=decode)
  return model, variables


def _tokens(length=LENGTH, seed=1):
  return jax.random.randint(jax.random.PRNGKey(seed), (2, length), 1, 40)


@pytest.mark.parametrize('scheme', sorted(TINY_SCHEMES))
def test_cached_decoding_equals_full_pass(scheme):
  config = tiny_config(scheme)
  model, variables = _init(config)
  tokens = _tokens()
  full = model.apply(variables, tokens, tokens, enable_dropout=False)
  _, cache_vars = _init(config, decode=True)
  cache = cache_vars['cache']
  step = jax.jit(lambda c, tok: model.apply(
      {'params': variables['params'], 'cache': c}, tok, tok,
      enable_dropout=False, decode=True, mutable=['cache']))
  stepped = []
  for t in range(LENGTH):
    logits, mutated = step(cache, tokens[:, t:t + 1])
    cache = mutated['cache']
    stepped.append(logits[:, 0])
  np.testing.assert_allclose(np.stack(stepped, 1), full, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize('scheme', sorted(TINY_SCHEMES))
def test_no_leak_from_future_tokens(scheme):
  """d logits[t] / d embedded[j] == 0 for every j > t, through the whole net."""
  model, variables = _init(tiny_config(scheme))
  tokens = _tokens()
  embedded = model.apply(variables, tokens, method=lambda m, x: m.token_embedder(x))

  def logits_from(embedded_row):
    def feed_embeddings(next_fun, args, kwargs, context):
      if isinstance(context.module, layers.Embed) and (
          context.method_name == '__call__'):
        return embedded_row
      return next_fun(*args, **kwargs)
    with nn.intercept_methods(feed_embeddings):
      logits = model.apply(variables, tokens[:1], tokens[:1],
                           enable_dropout=False)
    return logits[0].sum(-1)  # [length]

  jac = jax.jacrev(logits_from)(embedded[:1])      # [t, 1, j, emb]
  dependence = np.asarray(jnp.abs(jac).sum(axis=(1, 3)))  # [t, j]
  future = np.triu_indices(LENGTH, k=1)
  assert np.all(dependence[future] == 0.0)
  assert np.all(np.diag(dependence) > 0.0)

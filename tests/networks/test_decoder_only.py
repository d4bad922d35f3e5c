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
from tests.networks.configs import TINY_SCHEMES, random_variables, tiny_config

LENGTH = 19  # not a multiple of any block size used


def _zeros_cache(model, batch):
  """The decode cache as init would make it, without compiling init."""
  ones = jnp.ones((batch, LENGTH), jnp.float32)
  shapes = jax.eval_shape(functools.partial(
      model.init, enable_dropout=False, decode=True),
                          jax.random.PRNGKey(0), ones, ones)['cache']
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


@pytest.mark.parametrize('scheme', sorted(TINY_SCHEMES))
def test_cached_decoding_equals_full_pass_and_nothing_leaks(scheme):
  # MASFormer needs two layers for its schedule; one layer compiles faster.
  num_layers = 2 if scheme.startswith('masformer') else 1
  model = networks.DecoderOnly(tiny_config(scheme, num_decoder_layers=num_layers))
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, LENGTH), 1, 40)
  ones = jnp.ones((2, LENGTH), jnp.float32)  # T5X initialises with float ones
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

  @jax.jit
  def full_pass_and_jacobian():
    embedded = variables['params']['token_embedder']['embedding'][tokens]
    per_position = lambda e: logits_from_embeddings(e)[0].sum(-1)  # [length]
    return (model.apply(variables, tokens, tokens, enable_dropout=False),
            logits_from_embeddings(embedded),
            jax.jacrev(per_position)(embedded))                  # [t, b, j, emb]

  full, intercepted, jac = full_pass_and_jacobian()
  np.testing.assert_allclose(intercepted, full, atol=1e-5)  # faithful intercept
  dependence = np.asarray(jnp.abs(jac[:, 0]).sum(-1))  # [t, j], batch row 0
  assert np.all(dependence[np.triu_indices(LENGTH, k=1)] == 0.0)
  assert np.all(np.diag(dependence) > 0.0)

  step = jax.jit(lambda cache, token: model.apply(
      {'params': variables['params'], 'cache': cache}, token, token,
      enable_dropout=False, decode=True, mutable=['cache']))
  cache, stepped = _zeros_cache(model, 2), []
  for t in range(LENGTH):
    logits, mutated = step(cache, tokens[:, t:t + 1])
    cache = mutated['cache']
    stepped.append(logits[:, 0])
  np.testing.assert_allclose(np.stack(stepped, 1), full, atol=2e-5, rtol=2e-5)


def test_prefix_lm_and_prefill_are_refused_clearly():
  model = networks.DecoderOnly(tiny_config('dense'))
  ones = jnp.ones((1, 4), jnp.int32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), ones, ones)
  with pytest.raises(ValueError, match='prefix-LM'):
    model.apply(variables, ones, ones, decoder_causal_attention=ones)
  with pytest.raises(ValueError, match='prefill'):
    model.apply(variables, ones, ones, prefill=True)

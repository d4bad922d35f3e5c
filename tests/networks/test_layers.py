"""Building blocks against their formulas, and their errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax import attention
from fovea_jax import layers
from fovea_jax.layers import attention_layer

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 5, 6)).astype(np.float32)


def _run(module, *args, method=None):
  variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)
  variables = jax.tree.map(
      lambda s: RNG.normal(size=s.shape).astype(s.dtype), variables)
  out = jax.jit(lambda v: module.apply(v, *args, method=method))(variables)
  return variables['params'], np.asarray(out)


def test_dense_general_contracts_trailing_axes_into_head_features():
  params, out = _run(layers.DenseGeneral((3, 4), kernel_axes=('embed', 'heads',
                                                              'kv')), X)
  np.testing.assert_allclose(out, np.einsum('ble,ehd->blhd', X,
                                            params['kernel']), rtol=1e-5)
  params, back = _run(layers.DenseGeneral(6, axis=(-2, -1), kernel_axes=(
      'heads', 'kv', 'embed')), out)
  np.testing.assert_allclose(back, np.einsum('blhd,hde->ble', out,
                                             params['kernel']), rtol=1e-4)
  with pytest.raises(ValueError, match='one logical axis name per kernel'):
    _run(layers.DenseGeneral(3, kernel_axes=('embed',)), X)


def test_rms_norm_and_embedding():
  params, out = _run(layers.RMSNorm(), X)
  want = X / np.sqrt((X ** 2).mean(-1, keepdims=True) + 1e-6) * params['scale']
  np.testing.assert_allclose(out, want, rtol=1e-5)
  ids = np.array([[1, 3, 0]])
  embed = layers.Embed(num_embeddings=7, features=6)
  params, looked_up = _run(embed, ids)
  np.testing.assert_array_equal(looked_up, params['embedding'][ids])
  variables = {'params': params}
  logits = jax.jit(lambda v: embed.apply(v, X, method=layers.Embed.attend))(
      variables)
  np.testing.assert_allclose(logits, X @ params['embedding'].T, rtol=1e-5)
  with pytest.raises(ValueError, match='integer token ids'):
    embed.apply(variables, X)


def test_gated_gelu_mlp():
  params, out = _run(layers.MlpBlock(intermediate_dim=8), X)
  gelu = lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) *
                                          (x + 0.044715 * x ** 3)))  # gelu_new
  hidden = gelu(X @ params['wi_0']['kernel']) * (X @ params['wi_1']['kernel'])
  np.testing.assert_allclose(out, hidden @ params['wo']['kernel'], rtol=1e-4,
                             atol=1e-5)
  with pytest.raises(ValueError, match='Unknown MLP activations'):
    _run(layers.MlpBlock(intermediate_dim=8, activations=('swish',)), X)


def test_head_major_cross_attention_equals_dense_attention():
  """The decode-time cross-attention over the head-major cache
  (`static_kv_layout`): as
  `dot_product_attention` (float32, 1e-5), grouped heads, a padded example and
  one with no valid key (zeros)."""
  rng = np.random.default_rng(0)
  query = rng.normal(size=(3, 2, 4, 8)).astype(np.float32)  # 2 decodes each
  key, value = (rng.normal(size=(3, 37, 2, 8)).astype(np.float32)
                for _ in range(2))
  key_mask = np.ones((3, 37), bool)
  key_mask[1, 20:] = False
  key_mask[2] = False
  got = attention_layer._static_attention(  # pylint: disable=protected-access
      query, *attention_layer.static_kv_layout(key, value), key_mask)
  want = attention.dot_product_attention(query, key, value, scale=1.0,
                                         key_mask=key_mask)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(got)[2], 0.0)

"""network.Config from gin, scheme registry, and clear errors for bad settings."""
import functools

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax import networks
from fovea_jax.layers import schemes
from tests.networks.configs import TINY_SCHEMES, tiny_config


@pytest.fixture
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_gin_builds_a_fovea_lm_and_a_tglobal_encoder_decoder(clean_gin):
  gin.parse_config('''
      from __gin__ import dynamic_registration
      from fovea_jax.layers.schemes import fovea
      from fovea_jax.networks import network
      network.Config.vocab_size = 64
      network.Config.emb_dim = 32
      network.Config.num_heads = 4
      network.Config.head_dim = 8
      network.Config.mlp_dim = 48
      network.Config.num_decoder_layers = 2
      network.Config.dtype = 'bfloat16'
      network.Config.attention = @fovea.Fovea()
      fovea.Fovea.block_len = 16
      fovea.Fovea.coarse_weight = 'count'
  ''')
  config = networks.Config()
  assert config.scheme == schemes.Fovea(block_len=16, coarse_weight='count')
  model = networks.DecoderOnly(config)
  tokens = np.ones((2, 40), np.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens, tokens)
  logits = jax.eval_shape(
      lambda v: model.apply(v, tokens, tokens, enable_dropout=False), variables)
  assert logits.shape == (2, 40, 64) and logits.dtype == jnp.float32
  assert variables['params']['decoder']['layers_0']['self_attention']['query'][
      'kernel'].dtype == jnp.float32  # params stay float32 under bf16 compute

  gin.parse_config('''
      network.Config.attention = 'longt5_tglobal'
      network.Config.num_encoder_layers = 2
  ''')
  config = networks.Config()
  model = networks.EncoderDecoder(config)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens,
                             tokens[:, :8], tokens[:, :8])
  first = variables['params']['encoder']['layers_0']
  assert first['relpos_bias']['rel_embedding'].shape == (32, 4)
  assert first['side_relpos_bias']['rel_embedding'].shape == (32, 4)
  assert 'relpos_bias' not in variables['params']['encoder']['layers_1']


def test_masformer_schedule():
  spec = schemes.MASFormer(num_full=2, local='block', block_len=8)
  assert spec.dense_layers(6) == (0, 1)
  assert schemes.MASFormer(full_layers=[5, 2]).dense_layers(6) == (2, 5)
  assert hash(schemes.MASFormer(full_layers=[5, 2]))  # lists from gin are fine
  dense_layer = spec.for_layer(1, 6, causal=True)
  local_layer = spec.for_layer(2, 6, causal=True)
  assert dense_layer.func is schemes.Dense
  assert local_layer.func is schemes.Local
  assert local_layer.keywords == dict(causal=True, window=None, block_len=8)
  with pytest.raises(ValueError, match='outside the 6 layers'):
    schemes.MASFormer(full_layers=(7,)).dense_layers(6)


@pytest.mark.parametrize('masformer', [
    dict(num_full=2), dict(num_full=4), dict(full_layers=(0, 1))])
def test_masformer_that_makes_every_layer_dense_is_an_error(masformer):
  # The default num_full=4 on a 2-layer model used to train a dense model.
  config = tiny_config(attention=schemes.MASFormer(window=3, **masformer))
  model = networks.DecoderOnly(config)
  tokens = np.ones((1, 8), np.float32)
  with pytest.raises(ValueError, match=r'MASFormer\.(num_full|full_layers).*all '
                     r'2 layers.*num_full below 2'):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens, tokens)


@pytest.mark.parametrize('bad,message', [
    (dict(attention='flash'), 'unknown attention scheme'),
    (dict(dtype='float8'), 'dtype'),
    (dict(num_heads=4, num_kv_heads=3), 'multiple of num_kv_heads'),
    (dict(emb_dim=0), 'emb_dim must be a positive integer'),
    (dict(dropout_rate=1.5), 'dropout_rate'),
])
def test_bad_settings_raise_clear_errors(bad, message):
  with pytest.raises(ValueError, match=message):
    networks.Config(**bad)


def test_fma_learned_filters_are_bounded_by_max_length():
  config = networks.Config(
      vocab_size=16, emb_dim=8, num_heads=1, head_dim=8, mlp_dim=8,
      num_encoder_layers=1, num_decoder_layers=1,
      attention=schemes.Fma(fine_len=4, rank=2, downsample='grouped_conv',
                            max_length=16))
  model = networks.EncoderDecoder(config)
  tokens = np.ones((1, 24), np.float32)
  with pytest.raises(ValueError, match='max_length=16'):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens, tokens[:, :4],
                   tokens[:, :4])


@pytest.mark.parametrize('scheme', sorted(TINY_SCHEMES))
def test_bfloat16_decoding_traces_for_every_scheme(scheme):
  """bf16 compute: full pass and one cached step trace (dtype-consistent caches)
  and keep float32 logits. Tracing only (eval_shape): no compile."""
  model = networks.DecoderOnly(tiny_config(scheme, dtype='bfloat16'))
  tokens = np.ones((2, 19), np.float32)
  variables = jax.eval_shape(functools.partial(model.init, decode=True),
                             jax.random.PRNGKey(0), tokens, tokens)
  logits, mutated = jax.eval_shape(
      lambda v: model.apply(v, tokens[:, :1], tokens[:, :1], decode=True,
                            enable_dropout=False, mutable=['cache']), variables)
  assert logits.shape == (2, 1, 40) and logits.dtype == jnp.float32
  assert jax.tree.map(lambda a: (a.shape, a.dtype), mutated['cache']) == (
      jax.tree.map(lambda a: (a.shape, a.dtype), variables['cache']))

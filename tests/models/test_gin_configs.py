"""Every model gin file parses and builds its model under `jax.eval_shape`, and
the LongT5 base / XL sizes have LongT5's parameter counts.

LongT5's counts are derived analytically from the layout of Hugging Face's
`LongT5ForConditionalGeneration` with the published configs (google/long-t5-
{local,tglobal}-{base,xl}): shared embedding + untied lm_head, per layer q/k/v/o,
gated-GELU wi_0/wi_1/wo, RMSNorm scales, one relative-position table per stack,
and for transient-global a second table plus a global-token norm per encoder
layer. The formula is checked against `transformers`' LongT5 built on the meta
device when transformers is installed.
"""
import pathlib
import re

import gin
import jax
import numpy as np
import pytest

from fovea_jax import models
from fovea_jax.layers import schemes
from gin_models import GIN_DIR
from gin_models import build_model

MODEL_FILES = sorted(
    str(p.relative_to(GIN_DIR)) for sub in ('architectures', 'attention',
                                            'sizes')
    for p in (GIN_DIR / sub).glob('*.gin'))
TINY_MODELS = ('sizes/tiny.gin', 'sizes/decoder_only_tiny.gin')


def attention_class_of(path) -> str:
  """The scheme class an attention gin file names (`@<module>.<Class>()`)."""
  text = (GIN_DIR / path).read_text()
  match = re.search(r'network\.Config\.attention = @\w+\.(\w+)\(\)', text)
  assert match, f'{path} does not bind network.Config.attention'
  return match.group(1)


def abstract_params(model, enc_len=256, dec_len=32):
  if isinstance(model, models.EncoderDecoderModel):
    shapes = {'encoder_input_tokens': (2, enc_len),
              'decoder_input_tokens': (2, dec_len)}
  else:
    shapes = {'decoder_input_tokens': (2, enc_len)}
  variables = jax.eval_shape(
      lambda rng: model.get_initial_variables(rng, shapes),
      jax.random.PRNGKey(0))
  return variables['params']


def count(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


@pytest.mark.slow
@pytest.mark.parametrize('path', MODEL_FILES)
def test_gin_file_builds_its_model(path):
  if path.startswith('attention/'):
    # An attention file is added to a size file; try it in both networks.
    for size in TINY_MODELS:
      # MASFormer's default schedule (4 dense layers) needs more than the
      # tiny models' 2 layers.
      extra = (['masformer.MASFormer.num_full = 1']
               if path == 'attention/masformer.gin' else [])
      model = build_model([size, path], extra)
      scheme = model.module.config.scheme
      assert attention_class_of(path) == type(scheme).__name__
      assert type(scheme) in schemes.BY_NAME.values()
      assert count(abstract_params(model)) > 0
    return
  model = build_model([path])
  expected = (models.DecoderOnlyModel
              if 'decoder_only' in path else models.EncoderDecoderModel)
  assert isinstance(model, expected)
  assert count(abstract_params(model)) > 0


def test_command_line_overrides_reach_the_network():
  # What `--gin.X=...` turns into: bindings parsed after the files. Scheme
  # options must reach the scheme the attention file picked.
  model = build_model(['sizes/tiny.gin', 'attention/fovea.gin'],
                      ['network.Config.emb_dim = 48',
                       'fovea.Fovea.block_len = 64'])
  params = abstract_params(model)
  assert params['token_embedder']['embedding'].shape == (384, 48)
  assert model.module.config.attention.block_len == 64
  assert model.output_vocabulary.eos_id == 1
  model = build_model(['sizes/decoder_only_tiny.gin', 'attention/masformer.gin'],
                      ['masformer.MASFormer.window = 8',
                       'masformer.MASFormer.num_full = 1'])
  assert model.module.config.attention.window == 8


def test_operative_config_can_be_written():
  gin.clear_config()
  gin.add_config_file_search_path(str(GIN_DIR))
  try:
    gin.parse_config_files_and_bindings(
        ['sizes/decoder_only_tiny.gin', 'attention/masformer.gin'], [])
    assert 'MASFormer' in gin.config_str()
  finally:
    gin.clear_config()


def longt5_param_count(d_model, d_ff, num_heads, d_kv, num_layers,
                       vocab_size=32128, num_buckets=32,
                       transient_global=False):
  """Parameters of HF's LongT5ForConditionalGeneration (see module docstring)."""
  attention = 4 * d_model * num_heads * d_kv
  mlp = 3 * d_model * d_ff
  encoder_layer = attention + mlp + 2 * d_model
  decoder_layer = 2 * attention + mlp + 3 * d_model
  encoder = num_layers * encoder_layer + num_buckets * num_heads + d_model
  if transient_global:
    encoder += num_layers * d_model + num_buckets * num_heads
  decoder = num_layers * decoder_layer + num_buckets * num_heads + d_model
  return 2 * vocab_size * d_model + encoder + decoder


# The published configs (config.json of google/long-t5-*-base and -xl).
LONGT5_CONFIGS = {
    'base': dict(d_model=768, d_ff=2048, num_heads=12, d_kv=64, num_layers=12),
    'xl': dict(d_model=2048, d_ff=5120, num_heads=32, d_kv=64, num_layers=24),
}


@pytest.mark.slow
@pytest.mark.parametrize('size', ['base', 'xl'])
@pytest.mark.parametrize('attention', ['longt5_local', 'longt5_tglobal'])
def test_parameter_counts_match_longt5(size, attention):
  model = build_model([f'sizes/{size}.gin', f'attention/{attention}.gin'])
  ours = count(abstract_params(model, enc_len=128, dec_len=8))
  published = longt5_param_count(
      **LONGT5_CONFIGS[size], transient_global=attention == 'longt5_tglobal')
  print(f'LongT5 {size} {attention}: ours {ours:,} vs LongT5 {published:,} '
        f'({(ours - published) / published:+.4%})')
  assert abs(ours - published) <= 0.01 * published
  # The published headline sizes: ~250M (base), ~3B (XL).
  assert published == pytest.approx({'base': 2.48e8, 'xl': 2.85e9}[size],
                                    rel=0.05)


@pytest.mark.slow
def test_analytic_count_matches_transformers_longt5():
  """The formula above against `transformers`' own LongT5 on the meta device
  (no memory), counting the encoder/decoder token embeddings once as the
  released checkpoints store them (tied to `shared`; lm_head untied)."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  for size, dims in LONGT5_CONFIGS.items():
    for attention in ('local', 'transient-global'):
      config = transformers.LongT5Config(
          vocab_size=32128, d_model=dims['d_model'], d_ff=dims['d_ff'],
          d_kv=dims['d_kv'], num_heads=dims['num_heads'],
          num_layers=dims['num_layers'], feed_forward_proj='gated-gelu',
          encoder_attention_type=attention)
      config.tie_word_embeddings = False  # the constructor argument is ignored
      with torch.device('meta'):
        hf_model = transformers.LongT5ForConditionalGeneration(config)
      hf_count = sum(p.numel() for name, p in hf_model.named_parameters()
                     if not name.endswith('embed_tokens.weight'))
      assert hf_count == longt5_param_count(
          **dims, transient_global=attention == 'transient-global'), (size,
                                                                     attention)

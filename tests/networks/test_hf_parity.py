"""Parity with Hugging Face transformers' LongT5 (PyTorch, CPU) on imported weights.

A tiny random LongT5 of each encoder attention type (and a T5.1.1) is saved as
safetensors,
imported with `fovea_jax.interop`, and must give the same encoder states and
logits to 1e-4, with an input length that is not a multiple of the local block
(local_radius + 1) nor of the global block, and with padding.
"""
import flax
import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from fovea_jax import interop  # noqa: E402
from fovea_jax import networks  # noqa: E402
from fovea_jax.layers import schemes  # noqa: E402

pytestmark = [pytest.mark.parity, pytest.mark.slow]

ENC_LEN, DEC_LEN, REAL = 23, 7, 17  # block 4, global block 4: neither divides 23


def _hf_model(attention_type, directory):
  """A tiny random LongT5 (attention_type 'local' / 'transient-global') or, for
  'dense', a T5.1.1 (T5ForConditionalGeneration), saved as safetensors."""
  torch.manual_seed(0)
  sizes = dict(vocab_size=48, d_model=16, d_kv=8, d_ff=24, num_layers=2,
               num_decoder_layers=2, num_heads=2, feed_forward_proj='gated-gelu',
               tie_word_embeddings=False, dropout_rate=0.0,
               decoder_start_token_id=0)
  if attention_type == 'dense':
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**sizes))
  else:
    model = transformers.LongT5ForConditionalGeneration(transformers.LongT5Config(
        local_radius=3, global_block_size=4,
        encoder_attention_type=attention_type, **sizes))
  model = model.eval()
  with torch.no_grad():  # make every tensor matter: scales and biases not ~1/0
    for name, tensor in model.named_parameters():
      if name.endswith('layer_norm.weight'):
        tensor.uniform_(0.5, 1.5)
      elif 'relative_attention_bias' in name:
        tensor.normal_(0.0, 1.0)
  model.save_pretrained(directory, safe_serialization=True)
  return model


def _inputs():
  rng = np.random.default_rng(0)
  enc = rng.integers(2, 48, (2, ENC_LEN))
  enc[1, REAL:] = 0
  targets = rng.integers(2, 48, (2, DEC_LEN))
  dec_in = np.concatenate([np.zeros((2, 1), np.int64), targets[:, :-1]], 1)
  return enc, dec_in, targets


@pytest.mark.parametrize('attention_type', ['local', 'transient-global', 'dense'])
def test_imported_longt5_matches_transformers(attention_type, tmp_path):
  hf = _hf_model(attention_type, tmp_path)
  config, params, unused = interop.load_hf_checkpoint(str(tmp_path))
  assert unused == []
  enc, dec_in, targets = _inputs()
  with torch.no_grad():
    out = hf(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc > 0, dtype=torch.float32),
             decoder_input_ids=torch.tensor(dec_in), output_hidden_states=True)
  hf_logits = out.logits.numpy()
  hf_encoded = out.encoder_last_hidden_state.numpy()

  model = networks.EncoderDecoder(config)
  variables = {'params': params}
  # The imported tree must be exactly the tree our model creates.
  created = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), np.ones((1, 8)), np.ones((1, 4)),
      np.ones((1, 4))))['params']
  assert jax.tree.map(lambda a: a.shape, created) == jax.tree.map(
      lambda a: a.shape, variables['params'])
  encoded, logits = jax.jit(lambda v: (
      model.apply(v, enc, enable_dropout=False,
                  method=networks.EncoderDecoder.encode),
      model.apply(v, enc, dec_in, targets, enable_dropout=False)))(variables)
  real = enc > 0
  encoded_diff = np.abs(np.asarray(encoded) - hf_encoded)[real].max()
  logits_diff = np.abs(np.asarray(logits) - hf_logits).max()
  print(f'{attention_type}: max |encoder diff| {encoded_diff:.2e}, '
        f'max |logit diff| {logits_diff:.2e}')
  assert encoded_diff < 1e-4
  assert logits_diff < 1e-4

  # Export gives back exactly the tensors transformers saved.
  from safetensors.numpy import load_file
  saved = load_file(str(tmp_path / 'model.safetensors'))
  exported = interop.export_hf_state_dict(params, config)
  for name, tensor in exported.items():
    source = saved.get(name, saved['shared.weight'] if name == 'lm_head.weight'
                       else None)
    np.testing.assert_array_equal(tensor, source, err_msg=name)


def test_fovea_encoder_warm_starts_from_longt5_with_every_weight(tmp_path):
  _hf_model('local', tmp_path / 'local')
  local_config, local_params, _ = interop.load_hf_checkpoint(
      str(tmp_path / 'local'))
  fovea = schemes.Fovea(block_len=4)
  config, params, unused = interop.load_hf_checkpoint(str(tmp_path / 'local'),
                                                      attention=fovea)
  assert unused == []
  assert config.attention == fovea
  jax.tree.map(np.testing.assert_array_equal, params, local_params)
  model = networks.EncoderDecoder(config)
  enc, dec_in, targets = _inputs()
  logits = jax.jit(lambda v: model.apply(v, enc, dec_in, targets,
                                         enable_dropout=False))({'params': params})
  assert np.all(np.isfinite(logits))
  # From a transient-global checkpoint, only TGlobal's own extras stay unused.
  _hf_model('transient-global', tmp_path / 'tglobal')
  _, params, unused = interop.load_hf_checkpoint(str(tmp_path / 'tglobal'),
                                                 attention=fovea)
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, local_params)
  prefix = 'encoder.block.{}.layer.0.TransientGlobalSelfAttention.'
  assert sorted(unused) == sorted(
      [prefix.format(0) + 'global_relative_attention_bias.weight'] +
      [prefix.format(i) + 'global_input_layer_norm.weight' for i in (0, 1)])


def test_export_loads_in_transformers_with_the_same_logits(tmp_path):
  """Our tree -> safetensors + config.json -> from_pretrained: same logits, with
  an untied head (logits_dense != embedding) and through HfNameMap (export)."""
  _hf_model('transient-global', tmp_path / 'source')
  config, params, _ = interop.load_hf_checkpoint(str(tmp_path / 'source'))
  rng = np.random.default_rng(1)
  head = params['decoder']['logits_dense']
  head['kernel'] = rng.normal(0, 0.3, head['kernel'].shape).astype(np.float32)
  interop.save_hf_checkpoint(params, config, str(tmp_path / 'exported'))
  flat = flax.traverse_util.flatten_dict(params, sep='/')  # as export sees it
  mapped = interop.HfNameMap(config)(flat)
  assert mapped.keys() == interop.export_hf_state_dict(params, config).keys()
  hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(
      str(tmp_path / 'exported')).eval()
  enc, dec_in, targets = _inputs()
  with torch.no_grad():
    hf_logits = hf(input_ids=torch.tensor(enc),
                   attention_mask=torch.tensor(enc > 0, dtype=torch.float32),
                   decoder_input_ids=torch.tensor(dec_in)).logits.numpy()
  model = networks.EncoderDecoder(config)
  logits = jax.jit(lambda v: model.apply(v, enc, dec_in, targets,
                                         enable_dropout=False))({'params': params})
  assert np.abs(np.asarray(logits) - hf_logits).max() < 1e-4

"""`export`: params-only checkpoint, serialized inference functions, safetensors.

Writes into `output_dir`:
- `params/checkpoint_<step>/`: an orbax params-only checkpoint (float32 or
  bfloat16), what a warm start (`RestoreCheckpointConfig`) reads;
- `params.safetensors`: the same params, flat, keyed `encoder/layers_0/...`;
- `jax.export`-serialized StableHLO functions of `(params_dict, tokens)`, with
  the decoding settings of the model's gin config (sampling with PRNG key 0):
  an encoder-decoder gets `encode.jax_export` and `predict.jax_export`, taking
  `encoder_input_tokens [batch, inputs_len] int32` and returning the encoding,
  resp. the decoded token ids `[batch, targets_len]`; a decoder-only model gets
  `predict.jax_export`, taking prompts `[batch, inputs_len] int32` (each row
  left-aligned, padded with 0) and returning `targets_len` generated tokens per
  row (0 after an EOS);
- `huggingface/`: config.json + model.safetensors in the Hugging Face LongT5 (or
  T5) layout, when the network is fovea_jax.networks' EncoderDecoder with an
  attention scheme transformers computes (dense, LongT5 local or
  transient-global; fovea, FMA and MASFormer are refused, naming the scheme);
- `manifest.json`: shapes, dtypes, the step, and how to call them.
An earlier export in `output_dir` (a re-run) is replaced, with a log line
saying so; a folder holding other files is refused.
Loading needs only jax, numpy and safetensors, not fovea_jax
(`export_loader.load_exported` does it, and can be copied out of fovea_jax):

    exported = jax.export.deserialize(open('predict.jax_export', 'rb').read())
    params = safetensors.numpy.load_file('params.safetensors')
    tokens = exported.call(params, input_tokens)
"""
import json
import logging
import os
import shutil
from typing import Any, Callable, Mapping, Optional, Sequence

import flax
import gin
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from fovea_jax import models
from fovea_jax.training import checkpoints
from fovea_jax.training import fingerprint
from fovea_jax.training import model_inputs

PyTree = Any
SEPARATOR = '/'


def flatten_params(params: PyTree) -> dict[str, Any]:
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  return {SEPARATOR.join(k): v for k, v in flat.items()}


def unflatten_params(flat: Mapping[str, Any]) -> PyTree:
  return flax.traverse_util.unflatten_dict(
      {tuple(k.split(SEPARATOR)): v for k, v in flat.items()})


def _cast(flat: Mapping[str, Any], dtype) -> dict[str, np.ndarray]:
  dtype = jnp.dtype(dtype)
  return {k: np.asarray(jax.device_get(v)).astype(
      dtype if np.issubdtype(np.asarray(v).dtype, np.floating) else None)
          for k, v in flat.items()}


def _lengths(task_feature_lengths: Mapping[str, int]) -> tuple[int, int]:
  """(inputs length, targets length): both are needed for every model kind."""
  if set(task_feature_lengths) != {'inputs', 'targets'}:
    raise ValueError(
        "export needs TASK_FEATURE_LENGTHS with exactly 'inputs' and 'targets', "
        f'got {dict(task_feature_lengths)}: for an encoder-decoder the input and '
        'output lengths, for a decoder-only model the prompt length and the '
        "number of tokens to generate (e.g. {'inputs': 256, 'targets': 64}).")
  return task_feature_lengths['inputs'], task_feature_lengths['targets']


def model_input_shapes(model: Any, batch_size: int, inputs_length: int,
                       targets_length: int) -> dict[str, tuple[int, int]]:
  """The model-feature shapes the exported functions run the network on."""
  if isinstance(model, models.DecoderOnlyModel):
    return {'decoder_input_tokens': (batch_size,
                                     inputs_length + targets_length)}
  return {'encoder_input_tokens': (batch_size, inputs_length),
          'decoder_input_tokens': (batch_size, targets_length)}


def inference_functions(model: Any, targets_length: int
                        ) -> dict[str, tuple[Callable, str]]:
  """{name: (fn(flat_params, tokens), what `tokens` is)} in export form."""
  if isinstance(model, models.DecoderOnlyModel):

    def continue_prompts(flat, prompts):
      batch = model.prompt_batch(prompts, targets_length)
      return model.predict_batch(unflatten_params(flat),
                                 batch)[:, :targets_length]

    return {'predict': (continue_prompts, 'prompt tokens (left-aligned, 0 '
                        'pads)')}

  def encode(flat, encoder_input_tokens):
    return model.module.apply({'params': unflatten_params(flat)},
                              encoder_input_tokens, enable_dropout=False,
                              method=model.module.encode)

  def predict(flat, encoder_input_tokens):
    batch = {
        'encoder_input_tokens': encoder_input_tokens,
        'decoder_input_tokens': jnp.zeros(
            (encoder_input_tokens.shape[0], targets_length), jnp.int32),
    }
    return model.predict_batch(unflatten_params(flat), batch)

  return {'encode': (encode, 'encoder_input_tokens'),
          'predict': (predict, 'encoder_input_tokens')}


def export_functions(model: Any, flat_params: Mapping[str, np.ndarray],
                     batch_size: int, inputs_length: int, targets_length: int,
                     platforms: Optional[Sequence[str]] = None
                     ) -> dict[str, tuple[jax.export.Exported, str]]:
  """{name: (Exported, what its token input is)}."""
  abstract_params = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
                     for k, v in flat_params.items()}
  tokens = jax.ShapeDtypeStruct((batch_size, inputs_length), jnp.int32)
  return {
      name: (jax.export.export(jax.jit(fn), platforms=platforms)(
          abstract_params, tokens), tokens_name)
      for name, (fn, tokens_name) in inference_functions(
          model, targets_length).items()
  }


def _hf_skip_reason(model: Any) -> Optional[str]:
  """Why transformers cannot run this model as trained, or None if it can."""
  # pylint: disable=g-import-not-at-top
  from fovea_jax import networks
  from fovea_jax.interop import hf_longt5
  if not isinstance(model.module, networks.EncoderDecoder):
    return (f'the network ({type(model.module).__name__}) is not fovea_jax.'
            'networks\' EncoderDecoder, which the Hugging Face layout maps')
  network_config = model.module.config
  if hf_longt5.transformers_attention_of(network_config) is None:
    scheme = network_config.scheme.scheme_name
    return (f'transformers cannot compute the {scheme!r} attention scheme: a '
            'LongT5 config would make it compute different attention with '
            'these weights')
  return None


def huggingface_layout(model: Any, huggingface: Optional[bool]
                       ) -> Optional[str]:
  """The HF encoder attention type to export as, or None to skip; raises for
  `huggingface=True` on a model transformers cannot compute."""
  if huggingface is False:
    return None
  reason = _hf_skip_reason(model)
  if reason is None:
    # pylint: disable=g-import-not-at-top
    from fovea_jax.interop import hf_longt5
    return hf_longt5.transformers_attention_of(model.module.config)
  if huggingface:
    raise ValueError(f'Hugging Face export refused: {reason}. Export without '
                     'it (export.huggingface = False; the jax.export functions '
                     'and safetensors compute the trained model), or train '
                     'with a scheme transformers has (dense, longt5_local, '
                     'longt5_tglobal).')
  logging.info('Hugging Face export skipped: %s.', reason)
  return None


def save_huggingface(model: Any, params: PyTree, output_dir: str) -> dict:
  """`output_dir/huggingface/` in the HF LongT5 (or T5) layout; returns its
  manifest entry. Refuses (ValueError naming the scheme) a model transformers
  cannot compute."""
  layout = huggingface_layout(model, True)
  network_config = model.module.config
  # pylint: disable=g-import-not-at-top
  from fovea_jax.interop import hf_longt5
  hf_dir = os.path.join(output_dir, 'huggingface')
  hf_longt5.save_hf_checkpoint(params, network_config, hf_dir)
  return {'directory': 'huggingface',
          'layout': layout,
          'note': ('LongT5ForConditionalGeneration (or T5ForConditionalGeneration'
                   ' for dense) .from_pretrained loads it and computes the '
                   'same attention.')}


# What `export` writes into its output_dir (the `*.jax_export` files besides).
_EXPORT_ENTRIES = frozenset({'params', 'params.safetensors', 'huggingface',
                             'manifest.json'})


def _is_export_entry(name: str) -> bool:
  return name in _EXPORT_ENTRIES or name.endswith('.jax_export')


def clear_previous_export(output_dir: str) -> Optional[str]:
  """Removes an earlier export from `output_dir`; returns what it removed.

  Exporting again into the same folder (a re-run) replaces the old export
  rather than failing on orbax's existing `params/checkpoint_<step>`. Anything
  there that export does not write is left alone and is an error, so a
  mistyped EXPORT_OUTPUT_DIR never deletes someone's files.
  """
  if not os.path.isdir(output_dir) or not os.listdir(output_dir):
    return None
  entries = sorted(os.listdir(output_dir))
  foreign = [name for name in entries if not _is_export_entry(name)]
  if foreign:
    raise FileExistsError(
        f'EXPORT_OUTPUT_DIR {output_dir} holds files an export does not write '
        f'({", ".join(foreign[:5])}); export into an empty or new folder, or '
        'remove them.')
  try:
    with open(os.path.join(output_dir, 'manifest.json')) as f:
      described = f'the export of step {json.load(f)["step"]}'
  except (OSError, ValueError, KeyError):
    described = 'an unfinished export'
  if jax.process_index() == 0:
    for name in entries:
      path = os.path.join(output_dir, name)
      if os.path.isdir(path):
        shutil.rmtree(path)
      else:
        os.remove(path)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('export_lib.clear_previous_export')
  logging.info('Replacing %s in %s.', described, output_dir)
  return described


@gin.configurable
def export(*,
           model: Any = gin.REQUIRED,
           restore_checkpoint_cfg: checkpoints.RestoreCheckpointConfig = (
               gin.REQUIRED),
           partitioner: Any = gin.REQUIRED,
           output_dir: str = gin.REQUIRED,
           task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
           batch_size: int = 1,
           params_dtype: str = 'float32',
           platforms: Optional[Sequence[str]] = None,
           huggingface: Optional[bool] = None) -> str:
  """Exports the restored checkpoint; returns output_dir.

  `huggingface`: True writes `huggingface/` and fails for a model transformers
  cannot compute (a fovea, FMA or MASFormer encoder, a decoder-only LM); None
  (default) writes it when transformers can and records why not in the
  manifest otherwise; False never writes it.
  """
  inputs_length, targets_length = _lengths(task_feature_lengths)
  shapes = model_input_shapes(model, batch_size, inputs_length, targets_length)
  types = {k: np.int32 for k in shapes}
  model_fingerprint = fingerprint.fingerprint(model)
  hf_layout = huggingface_layout(model, huggingface)
  params, step = checkpoints.restore_params(
      restore_checkpoint_cfg, partitioner,
      model_inputs.init_variables_fn(model, shapes, types), model_fingerprint)
  output_dir = os.path.abspath(os.path.expanduser(output_dir))
  clear_previous_export(output_dir)
  os.makedirs(output_dir, exist_ok=True)
  checkpoints.save_params(os.path.join(output_dir, 'params'), params,
                          dtype=params_dtype,
                          meta={'step': step, 'model': model_fingerprint})
  flat = _cast(flatten_params(params), params_dtype)
  functions = export_functions(model, flat, batch_size, inputs_length,
                               targets_length, platforms)
  if jax.process_index() != 0:
    return output_dir
  safetensors.numpy.save_file(flat, os.path.join(output_dir,
                                                 'params.safetensors'))
  for name, (exported, _) in functions.items():
    with open(os.path.join(output_dir, f'{name}.jax_export'), 'wb') as f:
      f.write(exported.serialize())
  manifest = {
      'step': step,
      'params_dtype': params_dtype,
      'batch_size': batch_size,
      'task_feature_lengths': dict(task_feature_lengths),
      'platforms': list(functions['predict'][0].platforms),
      'functions': {
          name: {'inputs': ['params (params.safetensors)',
                            f'{tokens_name} int32 [{batch_size}, '
                            f'{inputs_length}]'],
                 'outputs': [str(a) for a in exported.out_avals]}
          for name, (exported, tokens_name) in functions.items()},
      'usage': ("exported = jax.export.deserialize(open('predict.jax_export', "
                "'rb').read()); params = safetensors.numpy.load_file("
                "'params.safetensors'); exported.call(params, tokens)"),
  }
  if hf_layout is not None:
    manifest['huggingface'] = save_huggingface(model, unflatten_params(flat),
                                               output_dir)
  elif huggingface is None and not isinstance(model, models.DecoderOnlyModel):
    # An encoder-decoder transformers cannot run as trained: say why.
    manifest['huggingface'] = {'skipped': _hf_skip_reason(model)}
  with open(os.path.join(output_dir, 'manifest.json'), 'w') as f:
    json.dump(manifest, f, indent=2)
  return output_dir

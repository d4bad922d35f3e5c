"""Warm starts from Hugging Face LongT5 / T5 checkpoints.

`RestoreCheckpointConfig.path` (finetune.gin's INITIAL_CHECKPOINT_PATH) may name a
`save_pretrained` directory (config.json + model.safetensors) instead of one of
our checkpoints. Its tensors are mapped onto this run's network (the networks
helper's name table: a fovea, FMA or MASFormer encoder takes LongT5-local's
weights unchanged) and written once as a params-only checkpoint in
`<model_dir>/warm_start/`, which the usual restore then reads onto the mesh.
"""
import dataclasses
import json
import logging
import os
from typing import Any

import jax
import safetensors.numpy

from fovea_jax.training import checkpoints
from fovea_jax.training import fingerprint


def is_huggingface_checkpoint(path: Any) -> bool:
  return bool(path) and isinstance(path, (str, os.PathLike)) and all(
      os.path.isfile(os.path.join(path, name))
      for name in ('config.json', 'model.safetensors'))


def import_huggingface(hf_dir: str, model: Any, output_dir: str) -> str:
  """Writes hf_dir's weights as our params-only checkpoint; returns its path.

  Its meta carries the fingerprint of the model the HF config describes (a
  LongT5 local encoder, say), so warm-starting it into another scheme is the
  same explicit choice as with our own checkpoints."""
  # pylint: disable=g-import-not-at-top
  from fovea_jax.interop import hf_longt5
  network_config = model.module.config
  with open(os.path.join(hf_dir, 'config.json')) as f:
    hf_config, attention_type = hf_longt5.config_from_hf(json.load(f))
  state = safetensors.numpy.load_file(os.path.join(hf_dir, 'model.safetensors'))
  params, unused = hf_longt5.import_hf_state_dict(state, network_config,
                                                  attention_type)
  if unused:
    logging.info('Warm start from %s left %d tensors unused: %s', hf_dir,
                 len(unused), unused)
  source = fingerprint.fingerprint(model.module.clone(config=hf_config))
  return checkpoints.save_params(output_dir, params,
                                 meta={'step': 0, 'imported_from': hf_dir,
                                       'model': source})


def resolve(restore_cfg: checkpoints.RestoreCheckpointConfig, model: Any,
            model_dir: str) -> checkpoints.RestoreCheckpointConfig:
  """The restore config, pointed at an imported copy if it names an HF dir."""
  if restore_cfg is None or not is_huggingface_checkpoint(restore_cfg.path):
    return restore_cfg
  if getattr(model.module, 'config', None) is None:
    raise ValueError(f'{restore_cfg.path} is a Hugging Face checkpoint, but the '
                     f'model\'s network ({type(model.module).__name__}) has no '
                     'fovea_jax.networks Config to map its weights onto.')
  output_dir = os.path.join(model_dir, 'warm_start')
  path = checkpoints.find_checkpoint(
      checkpoints.latest_in(output_dir, fallback_to_scratch=True))
  if path is None:
    if jax.process_index() == 0:
      logging.info('Importing Hugging Face checkpoint %s.', restore_cfg.path)
    path = import_huggingface(restore_cfg.path, model, output_dir)
  return dataclasses.replace(restore_cfg, path=path, mode='specific',
                             strict=False)

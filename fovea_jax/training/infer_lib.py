"""`infer`: the gin-configured body of `python -m fovea_jax.infer`.

Decodes every example of a task split with the restored model and writes
`<output_dir>/<task>-<split>.jsonl`, one {"input", "prediction", "target"} per
example in dataset order.
"""
import json
import os
from typing import Any, Optional

import gin
import jax
import seqio

from fovea_jax.data import pipeline
from fovea_jax.data.config import DatasetConfig
from fovea_jax.data.config import get_mixture_or_task
from fovea_jax.evaluation import evaluator as evaluator_lib
from fovea_jax.training import checkpoints
from fovea_jax.training import eval_lib


def _decode(vocabulary, tokens) -> str:
  return vocabulary.decode([int(t) for t in tokens])


@gin.configurable
def infer(*,
          model: Any = gin.REQUIRED,
          dataset_cfg: DatasetConfig = gin.REQUIRED,
          restore_checkpoint_cfg: checkpoints.RestoreCheckpointConfig = (
              gin.REQUIRED),
          partitioner: Any = gin.REQUIRED,
          output_dir: str = gin.REQUIRED,
          num_examples: Optional[int] = None) -> str:
  """Writes predictions for dataset_cfg's split; returns the JSONL path."""
  predict_batch, _, _ = eval_lib.restored_model_fns(
      model, dataset_cfg, restore_checkpoint_cfg, partitioner)
  get_mixture_or_task(dataset_cfg.mixture_or_task_name, dataset_cfg.module)
  dataset = seqio.get_dataset(
      dataset_cfg.mixture_or_task_name,
      task_feature_lengths=dict(dataset_cfg.task_feature_lengths),
      dataset_split=dataset_cfg.split, shuffle=False, num_epochs=1,
      feature_converter=pipeline.make_feature_converter(
          dataset_cfg, getattr(model, 'FEATURE_CONVERTER_CLS', None)),
      use_cached=dataset_cfg.use_cached, seed=dataset_cfg.seed)
  if num_examples is not None:
    dataset = dataset.take(num_examples)
  in_vocab, out_vocab = model.input_vocabulary, model.output_vocabulary
  output_dir = os.path.abspath(os.path.expanduser(output_dir))
  os.makedirs(output_dir, exist_ok=True)
  path = os.path.join(output_dir, f'{dataset_cfg.mixture_or_task_name}-'
                      f'{dataset_cfg.split}.jsonl')
  rows = []
  for _, batch, num_real in evaluator_lib.padded_batches(
      dataset.enumerate(), dataset_cfg.batch_size):
    predictions = predict_batch(batch)
    inputs = batch.get('encoder_input_tokens', batch['decoder_input_tokens'])
    for i in range(num_real):
      rows.append({'input': _decode(in_vocab, inputs[i]),
                   'prediction': _decode(out_vocab, predictions[i]),
                   'target': _decode(out_vocab,
                                     batch['decoder_target_tokens'][i])})
  if jax.process_index() == 0:
    with open(path, 'w') as f:
      for row in rows:
        f.write(json.dumps(row) + '\n')
  return path

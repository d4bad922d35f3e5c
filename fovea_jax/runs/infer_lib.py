"""`infer`: the gin-configured body of `python -m fovea_jax.infer`.

Decodes every example of a task split with the restored model and writes
`<output_dir>/<task>-<split>.jsonl`, one {"input", "prediction", "target"} per
example in dataset order. An encoder-decoder writes its encoder input, decode
and target. A decoder-only model continues prompts: with TASK_FEATURE_LENGTHS
{'inputs': P, 'targets': G} the first P tokens of each example are the prompt
("input"), G tokens are generated ("prediction") and the example's next G
tokens are the "target".
"""
import json
import os
from typing import Any, Optional

import gin
import jax
import numpy as np

from fovea_jax.data import pipeline
from fovea_jax.data.config import DatasetConfig
from fovea_jax.data.config import get_mixture_or_task
from fovea_jax.evaluation import evaluator as evaluator_lib
from fovea_jax.runs import eval_lib
from fovea_jax.training import checkpoints
from fovea_jax.training import model_inputs


def _decode(vocabulary, tokens) -> str:
  return vocabulary.decode([int(t) for t in tokens if t])  # 0 pads


def check_model_can_predict(model_feature_names) -> None:
  """A decoder-only model predicts only continuations of a prompt."""
  if ('encoder_input_tokens' not in model_feature_names and
      'decoder_causal_attention' not in model_feature_names):
    raise ValueError(
        'A decoder-only model continues prompts: give TASK_FEATURE_LENGTHS '
        "both lengths, e.g. {'inputs': 256, 'targets': 64} (the first 256 "
        'tokens of each example are the prompt, 64 tokens are generated).')


def rows_to_write(batch, predictions, targets_length: int):
  """(prompts, predictions, targets) token arrays, one row per example.

  Decoder-only batches (seqio's prefix-LM features) hold prompt and target in
  one sequence: the prompt is where `decoder_causal_attention` is set, the
  target where the loss is; the model returns the generated tokens first, and
  only `targets_length` of them were asked for.
  """
  if 'encoder_input_tokens' in batch:
    return (batch['encoder_input_tokens'], predictions,
            batch['decoder_target_tokens'])
  prompts = np.where(batch['decoder_causal_attention'] > 0,
                     batch['decoder_input_tokens'], 0)
  targets = np.where(batch['decoder_loss_weights'] > 0,
                     batch['decoder_target_tokens'], 0)
  return prompts, np.asarray(predictions)[:, :targets_length], targets


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
  check_model_can_predict(model_inputs.input_shapes_and_types(
      model, dataset_cfg)[0])
  predict_batch, _, _ = eval_lib.restored_model_fns(
      model, dataset_cfg, restore_checkpoint_cfg, partitioner)
  get_mixture_or_task(dataset_cfg.mixture_or_task_name, dataset_cfg.module)
  dataset = pipeline.ordered_examples(
      dataset_cfg, getattr(model, 'FEATURE_CONVERTER_CLS', None), num_examples)
  in_vocab, out_vocab = model.input_vocabulary, model.output_vocabulary
  output_dir = os.path.abspath(os.path.expanduser(output_dir))
  os.makedirs(output_dir, exist_ok=True)
  path = os.path.join(output_dir, f'{dataset_cfg.mixture_or_task_name}-'
                      f'{dataset_cfg.split}.jsonl')
  rows = []
  for _, batch, num_real in evaluator_lib.padded_batches(
      dataset.enumerate(), dataset_cfg.batch_size):
    prompts, predictions, targets = rows_to_write(
        batch, predict_batch(batch), dataset_cfg.task_feature_lengths['targets'])
    for i in range(num_real):
      rows.append({'input': _decode(in_vocab, prompts[i]),
                   'prediction': _decode(out_vocab, predictions[i]),
                   'target': _decode(out_vocab, targets[i])})
  if jax.process_index() == 0:
    with open(path, 'w') as f:
      for row in rows:
        f.write(json.dumps(row) + '\n')
  return path

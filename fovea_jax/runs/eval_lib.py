"""`evaluate`: the gin-configured body of `python -m fovea_jax.eval`.

Restores params, then runs the data library's seqio evaluation with the model's
decoding (`predict_batch`: greedy, beam or sampling, as the model gin sets) and
per-token scores (for perplexity / bits per byte). Results go to
`<output_dir>/results.json` as well as the evaluator's own JSON and TensorBoard
logs.
"""
import json
import os
from typing import Any, Optional

import gin
import jax
import numpy as np

from fovea_jax.data.config import DatasetConfig
from fovea_jax.evaluation.evaluator import SeqioEvaluation
from fovea_jax.training import checkpoints
from fovea_jax.training import fingerprint
from fovea_jax.training import model_inputs


def jitted_model_fns(model: Any, partitioner: Any, params: Any):
  """(predict_batch(batch) -> tokens, score_tokens(batch) -> {'log_likelihood':
  [B, L] log-probs, 'top1': [B, L]}) on host numpy batches, compiled once per
  shape."""
  predict = partitioner.partition(lambda p, b: model.predict_batch(p, b))

  def token_scores(p, b):
    _, intermediates = model.score_batch(p, b, return_intermediates=True)
    decoder = intermediates['decoder']
    return {'log_likelihood': decoder['token_scores'][0],
            'top1': decoder['token_top1'][0]}

  score = partitioner.partition(token_scores)

  def run(fn, batch):
    out = fn(params, partitioner.shard_batch(batch, replicate_indivisible=True))
    return jax.tree.map(np.asarray, jax.device_get(out))

  return (lambda batch: run(predict, batch)), (lambda batch: run(score, batch))


def restored_model_fns(model, dataset_cfg, restore_checkpoint_cfg, partitioner):
  """`(predict_batch, score_batch, step)` over the checkpoint's restored params."""
  shapes, types = model_inputs.input_shapes_and_types(model, dataset_cfg)
  params, step = checkpoints.restore_params(
      restore_checkpoint_cfg, partitioner,
      model_inputs.init_variables_fn(model, shapes, types),
      fingerprint.fingerprint(model))
  predict_batch, score_batch = jitted_model_fns(model, partitioner, params)
  return predict_batch, score_batch, step


@gin.configurable
def evaluate(*,
             model: Any = gin.REQUIRED,
             dataset_cfg: DatasetConfig = gin.REQUIRED,
             restore_checkpoint_cfg: checkpoints.RestoreCheckpointConfig = (
                 gin.REQUIRED),
             partitioner: Any = gin.REQUIRED,
             output_dir: str = gin.REQUIRED,
             num_examples: Optional[int] = None) -> dict:
  """{task: {metric: value}} for the restored checkpoint on dataset_cfg.split."""
  predict_batch, score_batch, step = restored_model_fns(
      model, dataset_cfg, restore_checkpoint_cfg, partitioner)
  output_dir = os.path.abspath(os.path.expanduser(output_dir))
  evaluation = SeqioEvaluation(
      dataset_cfg, output_dir,
      feature_converter_cls=getattr(model, 'FEATURE_CONVERTER_CLS', None),
      num_examples=num_examples)
  try:
    results = evaluation.evaluate(step, predict_batch=predict_batch,
                                  score_batch=score_batch)
  finally:
    evaluation.close()
  if jax.process_index() == 0:
    with open(os.path.join(output_dir, 'results.json'), 'w') as f:
      json.dump({'step': step, 'results': results}, f, indent=2)
  return results

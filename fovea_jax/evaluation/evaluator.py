"""Runs `seqio.Evaluator` with a model's batch predict / score functions.

The model side stays simple: `predict_batch(batch) -> [B, L] token ids` (greedy,
beam or sampled; decoding stops at EOS) and `score_batch(batch) -> [B, L]
per-token log-likelihoods of `decoder_target_tokens`, or a dict of those
(`'log_likelihood'`) and `'top1'` ([B, L], 1 where the target token is the
model's most likely one). This file batches seqio's enumerated eval examples
(padding the last batch to a full one so a jitted function sees one shape),
restores the example order, turns token scores into the `{'sum', 'count'[,
'top1']}` rows `metrics.py` expects, and writes results as JSON lines (seqio's
JSONLogger, with the predictions) and TensorBoard scalars.
"""
import dataclasses
import os
from typing import Callable, Dict, Mapping, Optional, Type

import numpy as np

from fovea_jax.data import pipeline
from fovea_jax.data.config import DatasetConfig
from fovea_jax.data.config import check_task_feature_lengths
from fovea_jax.data.config import get_mixture_or_task
from fovea_jax.tensorflow_runtime import seqio
from fovea_jax.tensorflow_runtime import tf

Batch = Mapping[str, np.ndarray]
PredictBatchFn = Callable[[Batch], np.ndarray]
ScoreBatchFn = Callable[[Batch], np.ndarray]


def padded_batches(dataset: tf.data.Dataset, batch_size: int):
  """Yields (indices, batch padded to batch_size, number of real rows).

  `dataset` yields (index, features) pairs, as seqio's enumerated eval data.
  """
  for indices, batch in dataset.batch(batch_size).as_numpy_iterator():
    num_real = len(indices)
    if num_real < batch_size:
      batch = {k: np.concatenate(
          [v, np.zeros((batch_size - num_real, *v.shape[1:]), v.dtype)])
               for k, v in batch.items()}
    yield indices, batch, num_real


# The name infer_lib (training branch) first used; prefer `padded_batches`.
_padded_batches = padded_batches


def predict_fn_from_batch_predictor(predict_batch: PredictBatchFn,
                                    batch_size: int):
  """A seqio predict_fn calling `predict_batch` on fixed-size batches."""

  def predict_fn(dataset, model_feature_shapes=None):
    del model_feature_shapes
    results = []
    for indices, batch, num_real in padded_batches(dataset, batch_size):
      tokens = np.asarray(predict_batch(batch))
      if tokens.ndim != 2 or tokens.shape[0] != batch_size:
        raise ValueError(
            f'predict_batch must return [batch={batch_size}, length] token '
            f'ids, got shape {tokens.shape}.')
      results.extend((int(i), t.tolist())
                     for i, t in zip(indices, tokens[:num_real]))
    return results

  return predict_fn


def score_fn_from_batch_scorer(score_batch: ScoreBatchFn, batch_size: int):
  """A seqio score_fn giving each example `{'sum': log-likelihood, 'count':
  scored tokens}` and, when `score_batch` reports it, `'top1'` per position."""

  def score_fn(dataset, model_feature_shapes=None):
    del model_feature_shapes
    results = []
    for indices, batch, num_real in padded_batches(dataset, batch_size):
      scored = score_batch(batch)
      top1 = None
      if isinstance(scored, dict):
        top1 = np.asarray(scored['top1'], np.int8)
        scored = scored['log_likelihood']
      token_scores = np.asarray(scored, dtype=np.float64)
      targets = batch['decoder_target_tokens']
      if token_scores.shape != targets.shape:
        raise ValueError(
            'score_batch must return per-token log-likelihoods shaped like '
            f'decoder_target_tokens {targets.shape}, got {token_scores.shape}.')
      weights = batch.get('decoder_loss_weights', targets > 0).astype(np.float64)
      sums = (token_scores * weights).sum(axis=-1)
      counts = weights.sum(axis=-1)
      for row in range(num_real):
        result = {'sum': float(sums[row]), 'count': float(counts[row])}
        if top1 is not None:
          result['top1'] = top1[row].tolist()
        results.append((int(indices[row]), result))
    return results

  return score_fn


class SeqioEvaluation:
  """One eval split of a task or mixture, cached once, evaluated at any step.

  `cfg` gives the task, split, lengths, batch size and module; packing is
  always off (seqio cannot evaluate packed data).
  """

  def __init__(
      self,
      cfg: DatasetConfig,
      log_dir: str,
      *,
      feature_converter_cls: Optional[Type[seqio.FeatureConverter]] = None,
      num_examples: Optional[int] = None,
  ):
    check_task_feature_lengths(cfg.task_feature_lengths)
    # Fail here, clearly, on an unknown task or split or a missing vocabulary
    # (seqio's Evaluator would silently skip a task without the split).
    task_or_mixture = get_mixture_or_task(cfg.mixture_or_task_name, cfg.module)
    pipeline.check_split(cfg, task_or_mixture)
    pipeline.load_vocabularies(task_or_mixture)
    self._cfg = dataclasses.replace(cfg, pack=False)
    self._log_dir = log_dir
    # seqio's loggers write into log_dir but never create it.
    os.makedirs(log_dir, exist_ok=True)
    self._evaluator = seqio.Evaluator(
        mixture_or_task_name=cfg.mixture_or_task_name,
        feature_converter=pipeline.make_feature_converter(
            self._cfg, feature_converter_cls),
        eval_split=cfg.split,
        use_cached=cfg.use_cached,
        seed=cfg.seed,
        sequence_length=dict(cfg.task_feature_lengths),
        num_examples=num_examples,
        logger_cls=(seqio.JSONLogger,),
        log_dir=log_dir,
        async_compute_metrics=False)
    if not self._evaluator.eval_tasks:
      raise ValueError(f'{cfg.mixture_or_task_name!r} has no task with metric '
                       f'functions and a {cfg.split!r} split to evaluate.')
    self._tensorboard = tf.summary.create_file_writer(
        os.path.join(log_dir, 'tensorboard'))

  @property
  def task_names(self):
    return [task.name for task in self._evaluator.eval_tasks]

  @property
  def model_feature_shapes(self):
    return self._evaluator.model_feature_shapes

  def evaluate(
      self,
      step: int,
      *,
      predict_batch: Optional[PredictBatchFn] = None,
      score_batch: Optional[ScoreBatchFn] = None,
  ) -> Dict[str, Dict[str, float]]:
    """{task: {metric: value}} for `step`, also written to log_dir."""
    needed = {metric.model_output_type
              for task in self._evaluator.eval_tasks
              for metric in task.metric_objs}
    output_type = seqio.metrics.ModelOutputType
    if output_type.PREDICTION in needed and predict_batch is None:
      raise ValueError(f'Tasks {self.task_names} have prediction metrics '
                       '(e.g. ROUGE): pass predict_batch.')
    if output_type.SCORE in needed and score_batch is None:
      raise ValueError(f'Tasks {self.task_names} have score metrics '
                       '(perplexity): pass score_batch.')
    batch_size = self._cfg.batch_size
    metrics_future, _ = self._evaluator.evaluate(
        compute_metrics=True, step=step,
        predict_fn=predict_batch and predict_fn_from_batch_predictor(
            predict_batch, batch_size),
        score_fn=score_batch and score_fn_from_batch_scorer(
            score_batch, batch_size))
    results = {task: {name: float(value) for name, value in metrics.items()}
               for task, metrics in metrics_future.result().items()}
    with self._tensorboard.as_default():
      for task, metrics in results.items():
        for name, value in metrics.items():
          tf.summary.scalar(f'{task}/{name}', value, step=step)
    self._tensorboard.flush()
    return results

  def close(self):
    self._evaluator.close()
    self._tensorboard.close()

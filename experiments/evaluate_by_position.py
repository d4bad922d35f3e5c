"""`evaluate_by_position`: `fovea_jax.eval`'s evaluation plus loss by token position.

Runs the same restore and seqio evaluation as `python -m fovea_jax.eval` (bits
per byte for language modelling, ROUGE for summarization, answer accuracy for
the diagnostics) and, from the same per-token log-likelihoods:
- the mean loss of the target tokens in each position bin (e.g. 0-256, 256-1k,
  1k-2k, 2k-4k): a model that uses distant context keeps getting better
  further into the sequence;
- the mean loss of tokens that continue repeated text, binned by how far back
  the repetition is: a token whose preceding `ngram` tokens occurred before,
  at distance d (the latest earlier occurrence), can be copied from there, and
  a window narrower than d cannot see it. Tokens with no earlier occurrence of
  their n-gram form the bin 'new'.
Bound to runs/eval.gin's settings by experiments/gin/evaluate_by_position.gin.
"""
import json
import math
import os
from typing import Any, Optional, Sequence

import gin
import jax
import numpy as np

from fovea_jax.data import pipeline
from fovea_jax.data.config import DatasetConfig
from fovea_jax.evaluation import evaluator as evaluator_lib
from fovea_jax.runs import eval_lib
from fovea_jax.training import checkpoints

DEFAULT_BINS = (0, 256, 1024, 2048, 4096)
DEFAULT_REPEAT_BINS = (0, 32, 128, 512, 4096)
DEFAULT_NGRAM = 8


class PositionLoss:
  """Accumulates -log p of real target tokens into position bins."""

  def __init__(self, bins: Sequence[int]):
    if list(bins) != sorted(set(bins)) or len(bins) < 2 or bins[0] < 0:
      raise ValueError(f'position bins must be increasing and >= 0, got {bins}.')
    self.bins = tuple(int(b) for b in bins)
    self.nll = np.zeros(len(bins) - 1)
    self.count = np.zeros(len(bins) - 1)

  def add(self, token_scores: np.ndarray, weights: np.ndarray) -> None:
    positions = np.arange(token_scores.shape[1])
    for i, (lo, hi) in enumerate(zip(self.bins[:-1], self.bins[1:])):
      in_bin = ((positions >= lo) & (positions < hi))[None, :] * weights
      self.nll[i] -= float((token_scores * in_bin).sum())
      self.count[i] += float(in_bin.sum())

  @property
  def total_tokens(self) -> float:
    return float(self.count.sum())

  def mean_nll(self) -> float:
    return float(self.nll.sum() / max(self.count.sum(), 1))

  def table(self) -> list:
    """[{'bin': '0-256', 'tokens': n, 'nll': nats/token, 'bits': bits/token}]."""
    rows = []
    for i, (lo, hi) in enumerate(zip(self.bins[:-1], self.bins[1:])):
      nll = self.nll[i] / self.count[i] if self.count[i] else float('nan')
      rows.append({'bin': f'{lo}-{hi}', 'tokens': int(self.count[i]),
                   'nll': float(nll), 'bits': float(nll / math.log(2))})
    return rows


class RepeatLoss:
  """Accumulates -log p of real target tokens by the distance of the previous
  occurrence of their preceding n-gram."""

  def __init__(self, bins: Sequence[int], ngram: int):
    if list(bins) != sorted(set(bins)) or len(bins) < 2 or bins[0] < 0:
      raise ValueError(f'repeat bins must be increasing and >= 0, got {bins}.')
    if ngram < 1:
      raise ValueError(f'ngram must be at least 1, got {ngram}.')
    self.bins = tuple(int(b) for b in bins)
    self.ngram = int(ngram)
    self.nll = np.zeros(len(bins))  # the last entry: 'new'
    self.count = np.zeros(len(bins))

  @staticmethod
  def repeat_distances(tokens: np.ndarray, ngram: int) -> np.ndarray:
    """Per position i: i - j for the latest j < i whose preceding `ngram`
    tokens equal position i's, else -1 (also for i < ngram)."""
    distances = np.full(len(tokens), -1, np.int64)
    last = {}
    for i in range(ngram, len(tokens) + 1):
      key = tokens[i - ngram:i].tobytes()
      if i < len(tokens) and key in last:
        distances[i] = i - last[key]
      last[key] = i
    return distances

  def add(self, token_scores: np.ndarray, weights: np.ndarray,
          targets: np.ndarray) -> None:
    for scores, w, tokens in zip(token_scores, weights, targets):
      distances = self.repeat_distances(np.asarray(tokens, np.int64),
                                        self.ngram)
      for i, (lo, hi) in enumerate(zip(self.bins[:-1], self.bins[1:])):
        in_bin = (distances > lo) & (distances <= hi)
        self.nll[i] -= float((scores * w * in_bin).sum())
        self.count[i] += float((w * in_bin).sum())
      new = distances < 0
      self.nll[-1] -= float((scores * w * new).sum())
      self.count[-1] += float((w * new).sum())

  def table(self) -> list:
    """[{'bin': '32-128' (distance d in (32, 128]) or 'new', 'tokens',
    'nll', 'bits'}]."""
    names = [f'{lo}-{hi}' for lo, hi in zip(self.bins[:-1], self.bins[1:])]
    rows = []
    for name, nll, count in zip(names + ['new'], self.nll, self.count):
      mean = nll / count if count else float('nan')
      rows.append({'bin': name, 'tokens': int(count), 'nll': float(mean),
                   'bits': float(mean / math.log(2))})
    return rows


def _recording(score_batch, position_loss: PositionLoss,
               repeat_loss: Optional[RepeatLoss] = None):

  def score(batch):
    scored = score_batch(batch)
    scores = np.asarray(scored['log_likelihood'] if isinstance(scored, dict)
                        else scored, np.float64)
    targets = batch['decoder_target_tokens']
    weights = batch.get('decoder_loss_weights', targets > 0).astype(np.float64)
    position_loss.add(scores, weights)
    if repeat_loss is not None:
      repeat_loss.add(scores, weights, targets)
    return scored

  return score


@gin.configurable
def evaluate_by_position(*,
                         model: Any = gin.REQUIRED,
                         dataset_cfg: DatasetConfig = gin.REQUIRED,
                         restore_checkpoint_cfg: checkpoints.RestoreCheckpointConfig
                         = gin.REQUIRED,
                         partitioner: Any = gin.REQUIRED,
                         output_dir: str = gin.REQUIRED,
                         num_examples: Optional[int] = None,
                         bins: Sequence[int] = DEFAULT_BINS,
                         repeat_bins: Sequence[int] = DEFAULT_REPEAT_BINS,
                         ngram: int = DEFAULT_NGRAM) -> dict:
  """{'step', 'metrics': {task: {metric: value}}, 'nll_per_token',
  'position_loss': [...], 'repeat_loss': [...]}; also written to
  `<output_dir>/results.json`."""
  predict_batch, score_batch, step = eval_lib.restored_model_fns(
      model, dataset_cfg, restore_checkpoint_cfg, partitioner)
  output_dir = os.path.abspath(os.path.expanduser(output_dir))
  position_loss = PositionLoss(bins)
  repeat_loss = RepeatLoss(repeat_bins, ngram)
  evaluation = evaluator_lib.SeqioEvaluation(
      dataset_cfg, output_dir,
      feature_converter_cls=getattr(model, 'FEATURE_CONVERTER_CLS', None),
      num_examples=num_examples)
  try:
    metrics = evaluation.evaluate(
        step, predict_batch=predict_batch,
        score_batch=_recording(score_batch, position_loss, repeat_loss))
  finally:
    evaluation.close()
  if not position_loss.total_tokens:
    # The task has no score metric (summarization: ROUGE only), so seqio never
    # scored; score the same examples here for the validation loss.
    dataset = pipeline.ordered_examples(
        dataset_cfg, getattr(model, 'FEATURE_CONVERTER_CLS', None), num_examples)
    record = _recording(score_batch, position_loss, repeat_loss)
    for _, batch, _ in evaluator_lib.padded_batches(dataset.enumerate(),
                                                    dataset_cfg.batch_size):
      record(batch)
  result = {'step': step, 'metrics': metrics,
            'nll_per_token': position_loss.mean_nll(),
            'scored_tokens': position_loss.total_tokens,
            'position_loss': position_loss.table(),
            'repeat_loss': repeat_loss.table(), 'repeat_ngram': ngram}
  if jax.process_index() == 0:
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, 'results.json'), 'w') as f:
      json.dump(result, f, indent=2)
  return result

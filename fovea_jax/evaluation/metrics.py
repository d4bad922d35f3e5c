"""seqio metric functions: ROUGE, perplexity and bits per byte, answer accuracy.

seqio ships no ROUGE and the `t5` package pulls in far too much, so ROUGE comes
from `rouge_score` directly, scored the way T5 reports it: Porter stemming,
bootstrap-aggregated F-measure (the middle estimate), times 100.

Score metrics expect one row per example, `(sum of target log-likelihoods in
nats, number of scored target tokens)`; `evaluator.py` builds these rows from a
model's per-token log-likelihoods. The token count is what turns a sum into
perplexity: given bare per-example sums (what T5X's evaluator passes), the
count is taken from the target text re-encoded with the task's vocabulary.
`evaluator.py` rows are dicts, `{'sum', 'count'}` and, where the model reported
it, `'top1'`: per target position, 1 where the target token is the model's
most likely token (what `answer_accuracy` reads).
"""
import math
from typing import Callable, Dict, List, Sequence

import numpy as np
from rouge_score import rouge_scorer
from rouge_score import scoring

from fovea_jax.tensorflow_runtime import seqio

ROUGE_TYPES = ('rouge1', 'rouge2', 'rougeL', 'rougeLsum')


def _sentences_on_lines(text: str) -> str:
  # rougeLsum scores sentence by sentence and splits sentences on newlines;
  # put each sentence of a one-line summary on its own line (as T5 does).
  return text.replace(' . ', ' .\n').replace('. ', '.\n')


def rouge(targets: Sequence[str], predictions: Sequence[str],
          bootstrap_seed: int = 0) -> Dict[str, float]:
  """ROUGE-1/2/L/Lsum F-measure x 100 of `predictions` against `targets`."""
  if len(targets) != len(predictions):
    raise ValueError(f'rouge got {len(targets)} targets but '
                     f'{len(predictions)} predictions; they must pair up.')
  if not targets:
    raise ValueError('rouge needs at least one (target, prediction) pair.')
  scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
  # BootstrapAggregator resamples with numpy's global RNG; seed it so that a
  # metric is a function of its inputs.
  rng_state = np.random.get_state()
  np.random.seed(bootstrap_seed)
  try:
    aggregator = scoring.BootstrapAggregator()
    for target, prediction in zip(targets, predictions):
      aggregator.add_scores(scorer.score(
          target=_sentences_on_lines(target),
          prediction=_sentences_on_lines(prediction)))
    result = aggregator.aggregate()
  finally:
    np.random.set_state(rng_state)
  return {name: float(result[name].mid.fmeasure * 100) for name in ROUGE_TYPES}


def _is_row_dicts(scores) -> bool:
  return len(scores) > 0 and all(isinstance(s, dict) for s in scores)


def _log_likelihoods_and_counts(scores, targets,
                                vocabulary: seqio.Vocabulary) -> np.ndarray:
  if _is_row_dicts(scores):
    scores = [(s['sum'], s['count']) for s in scores]
  scores = np.asarray(scores, dtype=np.float64)
  if scores.ndim == 1 and len(scores) == len(targets):
    # T5X: one summed log-likelihood per example, over all its target tokens.
    counts = [len(vocabulary.encode(t)) for t in targets]
    scores = np.stack([scores, np.asarray(counts, np.float64)], axis=1)
  if scores.ndim != 2 or scores.shape[1] != 2:
    raise ValueError(
        'Language-model metrics need scores of shape [examples, 2] holding '
        '(sum of log-likelihoods, number of target tokens) per example, or '
        f'one sum per target, got shape {scores.shape} for {len(targets)} '
        'targets. Build the score function with '
        'fovea_jax.evaluation.evaluator.score_fn_from_batch_scorer.')
  if np.any(scores[:, 1] < 0) or scores[:, 1].sum() <= 0:
    raise ValueError('Token counts in the scores must be >= 0 with a positive '
                     f'total, got {scores[:, 1].tolist()[:8]}...')
  return scores


def language_model_metrics(
    vocabulary: seqio.Vocabulary) -> List[Callable[..., Dict[str, float]]]:
  """Metric fns for an LM task: perplexity, nats per token, bits per byte.

  Bits per byte divides the total negative log-likelihood (in bits) by the
  number of UTF-8 bytes of the targets: for a byte vocabulary that is the number
  of scored tokens (exact even where a chunk splits a character), otherwise the
  bytes of the decoded target text.
  """
  counts_tokens_as_bytes = isinstance(vocabulary, seqio.ByteVocabulary)

  def perplexity_and_bits_per_byte(targets, scores):
    scores = _log_likelihoods_and_counts(scores, targets, vocabulary)
    total_nll = -scores[:, 0].sum()
    total_tokens = scores[:, 1].sum()
    if counts_tokens_as_bytes:
      total_bytes = total_tokens
    else:
      total_bytes = sum(len(t.encode('utf-8')) for t in targets)
    nll_per_token = total_nll / total_tokens
    return {
        'perplexity': float(math.exp(nll_per_token)),
        'nll_per_token': float(nll_per_token),
        'bits_per_byte': float(total_nll / math.log(2) / max(total_bytes, 1)),
    }

  return [perplexity_and_bits_per_byte]


# Answer distances are binned by powers of two: [0, 16), [16, 32), [32, 64) ...
DISTANCE_BIN_EDGES = (0,) + tuple(2**k for k in range(4, 21))


def distance_bin(distance: int) -> str:
  """The name of the power-of-two bin `distance` falls in, e.g. '32-64'."""
  edges = DISTANCE_BIN_EDGES
  for lo, hi in zip(edges[:-1], edges[1:]):
    if lo <= distance < hi:
      return f'{lo}-{hi}'
  raise ValueError(f'distance {distance} is beyond {edges[-1]}.')


def answer_accuracy(targets: Sequence[dict], scores) -> Dict[str, float]:
  """Teacher-forced answer accuracy, overall, per distance bin and per group.

  `targets`: per example `{'start', 'end', 'distance', 'group'}` lists, one
  entry per answer (the diagnostic tasks' postprocessed targets); `scores`:
  the evaluator's rows with `'top1'`. An answer is right when every token in
  `[start, end)` is the model's most likely token there. Returns `accuracy`,
  `answers`, and `accuracy_d<lo>-<hi>` / `answers_d<lo>-<hi>` per distance bin
  and `accuracy_g<group>` / `answers_g<group>` per group (keys only for bins
  and groups that occur).
  """
  if len(targets) != len(scores):
    raise ValueError(f'answer_accuracy got {len(targets)} targets but '
                     f'{len(scores)} score rows; they must pair up.')
  if not _is_row_dicts(scores) or any('top1' not in s for s in scores):
    raise ValueError(
        'answer_accuracy needs per-token top-1 flags in each score row (the '
        "rows fovea_jax.eval's evaluator builds); per-example sums, as T5X's "
        'evaluator passes, cannot tell whether an answer was right.')
  right: Dict[str, list] = {}
  for target, row in zip(targets, scores):
    top1 = np.asarray(row['top1'])
    for start, end, distance, group in zip(target['start'], target['end'],
                                           target['distance'], target['group']):
      correct = float(np.all(top1[start:end] == 1))
      for key in ('', f'_d{distance_bin(distance)}', f'_g{group:g}'):
        right.setdefault(key, []).append(correct)
  if not right:
    raise ValueError('answer_accuracy got no answers to score.')
  out = {}
  for key, values in sorted(right.items(), key=lambda kv: _bin_order(kv[0])):
    out[f'accuracy{key}'] = float(np.mean(values))
    out[f'answers{key}'] = float(len(values))
  return out


def _bin_order(key: str):
  # Overall first, then distance bins by their lower edge, then groups.
  if not key:
    return (0, 0.0)
  if key.startswith('_d'):
    return (1, float(key[2:].split('-')[0]))
  return (2, float(key[2:]))

"""ROUGE, perplexity and bits per byte on inputs with hand-computed values."""
import math

import numpy as np
import pytest

from fovea_jax.evaluation import evaluator
from fovea_jax.evaluation import metrics
from fovea_jax.tensorflow_runtime import seqio
from fovea_jax.tensorflow_runtime import tf


def test_rouge_of_a_prefix_matches_hand_counts():
  # Target has 6 unigrams / 5 bigrams; the prediction is its first 3 words.
  # rouge1: P=3/3, R=3/6 -> F=2/3. rouge2: P=2/2, R=2/5 -> F=4/7. LCS=3 -> 2/3.
  scores = metrics.rouge(['the cat sat on the mat'], ['the cat sat'])
  assert scores['rouge1'] == pytest.approx(200 / 3)
  assert scores['rouge2'] == pytest.approx(400 / 7)
  assert scores['rougeL'] == pytest.approx(200 / 3)
  assert scores['rougeLsum'] == pytest.approx(200 / 3)


def test_rouge_stems_and_aggregates_identical_examples_exactly():
  # Porter stemming maps cats->cat, running/runs->run: a perfect match.
  assert metrics.rouge(['cats running'], ['cat runs'])['rouge1'] == 100.0
  # The bootstrap middle of identical per-example scores is that score.
  pair = (['a b c d'], ['a b x y'])
  assert metrics.rouge(pair[0] * 3, pair[1] * 3)['rouge1'] == pytest.approx(50)


def test_rouge_lsum_scores_sentence_by_sentence():
  target = 'the cat sat. the dog ran.'
  swapped = 'the dog ran. the cat sat.'
  scores = metrics.rouge([target], [swapped])
  # Whole-text LCS loses one sentence; summary-level LCS keeps both.
  assert scores['rougeLsum'] == pytest.approx(100)
  assert scores['rougeL'] < 70


def test_rouge_rejects_unpaired_inputs():
  with pytest.raises(ValueError, match='pair up'):
    metrics.rouge(['a'], ['a', 'b'])


def _score_rows(token_log_probs, targets):
  batch = {'decoder_target_tokens': targets}
  score_fn = evaluator.score_fn_from_batch_scorer(
      lambda b: token_log_probs, batch_size=targets.shape[0])
  dataset = tf.data.Dataset.from_tensor_slices(
      (np.arange(targets.shape[0]), batch))
  return [row for _, row in score_fn(dataset)]


def test_perplexity_of_a_known_distribution():
  # Tokens seen with probabilities 1/2, 1/4, 1/4 (padding ignored): the mean
  # negative log-likelihood is (5/3) ln 2, so perplexity is 2**(5/3) and a
  # byte-level model spends 5/3 bits per byte.
  log_probs = np.log([[0.5, 0.25, 0.3], [0.25, 0.9, 0.9]])
  targets = np.array([[7, 8, 0], [9, 0, 0]], np.int32)
  rows = _score_rows(log_probs, targets)
  assert rows[0] == pytest.approx({'sum': math.log(0.125), 'count': 2})
  (byte_metrics,) = metrics.language_model_metrics(seqio.ByteVocabulary())
  result = byte_metrics(['ab', 'c'], rows)
  assert result['perplexity'] == pytest.approx(2 ** (5 / 3))
  assert result['bits_per_byte'] == pytest.approx(5 / 3)


def test_bits_per_byte_counts_text_bytes_for_word_pieces():
  (word_piece_metrics,) = metrics.language_model_metrics(
      seqio.PassThroughVocabulary(size=100))
  # 2 tokens carrying 6 bytes with total log-likelihood -6 ln 2 (6 bits).
  result = word_piece_metrics(['abc', 'déf'[:2]],
                              [(-3 * math.log(2), 1), (-3 * math.log(2), 1)])
  assert result['bits_per_byte'] == pytest.approx(6 / 6)
  assert result['perplexity'] == pytest.approx(8)


def test_language_model_metrics_count_tokens_of_bare_sums():
  """T5X's evaluator passes one summed log-likelihood per example: the token
  counts come from re-encoding the targets."""
  (metric,) = metrics.language_model_metrics(seqio.ByteVocabulary())
  assert metric(['ab', 'cé'], [-1.0, -2.0]) == metric(
      ['ab', 'cé'], [(-1.0, 2), (-2.0, 3)])
  with pytest.raises(ValueError, match='number of target tokens'):
    metric(['a', 'b'], [-1.0, -2.0, -3.0])

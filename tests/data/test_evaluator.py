"""seqio.Evaluator runs with batch predict/score functions and writes logs."""
import dataclasses
import json
import math

import numpy as np
import pytest

from fovea_jax import data
from fovea_jax.evaluation import evaluator
from fovea_jax.tensorflow_runtime import tf

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow


def _config(task, lengths):
  return data.DatasetConfig(
      mixture_or_task_name=task, task_feature_lengths=lengths,
      split='validation', batch_size=4, shuffle=False, seed=0,
      module='fovea_jax.tasks')


@pytest.mark.slow
def test_rouge_of_predictions_and_the_logs_written(tmp_path):
  log_dir = tmp_path / 'not' / 'yet' / 'there'  # seqio would not create it.
  evaluation = evaluator.SeqioEvaluation(
      _config('stdlib_summarization', {'inputs': 256, 'targets': 512}),
      str(log_dir), num_examples=6)
  seen_shapes = []

  def copy_the_targets(batch):  # A perfect summariser.
    seen_shapes.append(batch['encoder_input_tokens'].shape)
    return batch['decoder_target_tokens']

  perfect = evaluation.evaluate(3, predict_batch=copy_the_targets)
  # 6 examples in fixed-size batches of 4: the last one is padded.
  assert seen_shapes == [(4, 256), (4, 256)]
  assert perfect == {'stdlib_summarization': {
      'rouge1': 100.0, 'rouge2': 100.0, 'rougeL': 100.0, 'rougeLsum': 100.0}}

  def say_nothing_useful(batch):
    tokens = np.zeros_like(batch['decoder_target_tokens'])
    tokens[:, 0] = 123  # One byte ('x'), then padding.
    return tokens

  poor = evaluation.evaluate(4, predict_batch=say_nothing_useful)
  assert poor['stdlib_summarization']['rouge1'] < 5
  evaluation.close()

  lines = (log_dir / 'stdlib_summarization-metrics.jsonl').read_text()
  logged = [json.loads(line) for line in lines.splitlines()]
  assert [entry['step'] for entry in logged] == [3, 4]
  assert logged[0]['rouge1'] == 100.0
  events = [e for path in (log_dir / 'tensorboard').iterdir()
            for e in tf.compat.v1.train.summary_iterator(str(path))]
  rouge1 = {e.step: tf.make_ndarray(v.tensor) for e in events
            for v in e.summary.value if v.tag == 'stdlib_summarization/rouge1'}
  assert rouge1[3] == pytest.approx(100.0) and rouge1[4] < 5


def test_perplexity_and_bits_per_byte_from_token_scores(tmp_path):
  evaluation = evaluator.SeqioEvaluation(
      _config('stdlib_lm', {'targets': 128}), str(tmp_path), num_examples=5)

  def uniform_over_bytes(batch):
    return np.full(batch['decoder_target_tokens'].shape, -math.log(256))

  result = evaluation.evaluate(0, score_batch=uniform_over_bytes)['stdlib_lm']
  assert result['perplexity'] == pytest.approx(256)
  assert result['bits_per_byte'] == pytest.approx(8)
  with pytest.raises(ValueError, match='pass score_batch'):
    evaluation.evaluate(1, predict_batch=lambda b: b['decoder_target_tokens'])


def test_a_split_the_task_lacks_is_an_error_not_an_empty_result(tmp_path):
  cfg = dataclasses.replace(_config('stdlib_lm', {'targets': 128}),
                            split='eval')
  with pytest.raises(ValueError, match="no split 'eval'"):
    evaluator.SeqioEvaluation(cfg, str(tmp_path))

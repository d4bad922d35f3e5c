"""The diagnostic tasks: examples mean what they say, and accuracy by distance."""
import collections

import numpy as np
import pytest

from fovea_jax.evaluation import evaluator
from fovea_jax.evaluation import metrics
from fovea_jax.tasks import diagnostic_sources as sources
from fovea_jax.tasks import diagnostic_tasks
from fovea_jax.tasks import vocabularies
from fovea_jax.tensorflow_runtime import seqio
from fovea_jax.tensorflow_runtime import tf


@pytest.mark.parametrize('task', list(sources.GENERATORS))
@pytest.mark.parametrize('length', [128, 517])
def test_examples_are_exact_length_deterministic_and_split_apart(task, length):
  text, answers = sources.example(task, 'validation', 7, length)
  assert len(text) == length and text.isascii()
  assert answers and all(0 < s < e <= length for s, e, _, _ in answers)
  assert sources.example(task, 'validation', 7, length) == (text, answers)
  assert sources.example(task, 'train', 7, length)[0] != text
  assert sources.example(task, 'validation', 8, length)[0] != text


def test_associative_recall_answers_repeat_the_value_after_the_first_key():
  for index in range(20):
    text, answers = sources.example('associative_recall', 'train', index, 512)
    for start, end, distance, group in answers:
      key_at = start - 1
      assert text[key_at] in sources.KEYS
      assert text[key_at - distance] == text[key_at]
      assert text[start:end] == text[key_at - distance + 1]
      assert text.count(text[key_at]) == 2
      assert group in sources.RECALL_DENSITIES


def test_fact_retrieval_queries_at_the_end_ask_for_their_fact():
  text, answers = sources.example('fact_retrieval', 'test', 3, 1024)
  assert len(answers) == sources.FACTS_PER_EXAMPLE
  keys = []
  for start, end, distance, _ in answers:
    query = start - 2  # '?KVV': the answer is VV
    assert text[query] == '?' and query >= 1024 - 4 * len(answers)
    fact = query - distance
    assert text[fact] == '@'
    assert text[fact + 1:fact + 4] == text[query + 1:query + 4]
    assert text[start:end].isdigit() and end - start == 2
    keys.append(text[query + 1])
  # Each key occurs in its fact and its query only.
  assert all(text.count(key) == 2 for key in keys)


def test_frequent_symbol_answer_is_the_mode_of_its_region():
  text, answers = sources.example('frequent_symbol', 'train', 11, 640)
  body = text[:640 - 3 * len(sources.REGION_TAGS)]  # before the queries
  for start, _, distance, _ in answers:
    tag, answer = text[start - 1], text[start]
    alphabet = sources.REGION_ALPHABETS[sources.REGION_TAGS.index(tag)]
    counts = collections.Counter(c for c in body if c in alphabet)
    assert counts.most_common(1)[0][0] == answer
    assert counts.most_common(2)[0][1] > counts.most_common(2)[1][1]
    positions = [i for i, c in enumerate(body) if c in alphabet]
    centre = positions[0] + len(positions) // 2
    assert start - 2 - centre == distance


def test_seqio_tasks_build_examples_of_the_target_length():
  task = seqio.get_mixture_or_task('diagnostic_associative_recall')
  ds = task.get_dataset({'targets': 96}, split='validation', shuffle=False)
  ex = next(ds.as_numpy_iterator())
  assert ex['targets'].shape == (96,) and ex['targets'].dtype == np.int32
  text = vocabularies.BYTE_VOCABULARY.decode(ex['targets'].tolist())
  expected, answers = sources.example('associative_recall', 'validation', 0, 96)
  assert text == expected
  assert ex['answer_start'].tolist() == [a[0] for a in answers]
  target = task.postprocess_fn(text, example=ex, is_target=True)
  assert target['distance'] == [a[2] for a in answers]
  assert set(seqio.get_mixture_or_task(diagnostic_tasks.MIXTURE).tasks) == {
      seqio.get_mixture_or_task(t) for t in diagnostic_tasks.TASKS}


def test_a_missing_target_length_is_a_clear_error():
  task = seqio.get_mixture_or_task('diagnostic_fact_retrieval')
  with pytest.raises(ValueError, match="TASK_FEATURE_LENGTHS"):
    task.get_dataset({'inputs': 64}, split='validation')


def test_answer_accuracy_by_distance_and_group():
  targets = [{'start': [3, 10], 'end': [5, 11], 'distance': [20, 40],
              'group': [1.0, 1.0]},
             {'start': [2], 'end': [3], 'distance': [100], 'group': [4.0]}]
  top1 = np.ones((2, 12), int)
  top1[0, 4] = 0  # the first answer's second token is wrong
  scores = [{'sum': -1.0, 'count': 12.0, 'top1': row.tolist()} for row in top1]
  out = metrics.answer_accuracy(targets, scores)
  assert out['accuracy'] == pytest.approx(2 / 3) and out['answers'] == 3
  assert out['accuracy_d16-32'] == 0.0 and out['answers_d16-32'] == 1
  assert out['accuracy_d32-64'] == 1.0
  assert out['accuracy_d64-128'] == 1.0
  assert out['accuracy_g1'] == 0.5 and out['accuracy_g4'] == 1.0
  assert list(out)[:2] == ['accuracy', 'answers']
  with pytest.raises(ValueError, match='top-1'):
    metrics.answer_accuracy(targets, [(-1.0, 12.0), (-1.0, 12.0)])


def test_score_rows_carry_top1_and_language_model_metrics_still_read_them():
  batch_size, length = 2, 6
  tokens = np.arange(1, 1 + 3 * length).reshape(3, length).astype(np.int32)
  dataset = tf.data.Dataset.from_tensor_slices(
      {'decoder_target_tokens': tokens}).enumerate()

  def score_batch(batch):
    targets = batch['decoder_target_tokens']
    return {'log_likelihood': -np.ones(targets.shape),
            'top1': (targets % 2 == 0).astype(np.int32)}

  rows = evaluator.score_fn_from_batch_scorer(score_batch, batch_size)(dataset)
  assert [i for i, _ in rows] == [0, 1, 2]
  assert rows[1][1]['top1'] == (tokens[1] % 2 == 0).astype(int).tolist()
  assert rows[2][1]['sum'] == -length and rows[2][1]['count'] == length
  lm = metrics.language_model_metrics(vocabularies.BYTE_VOCABULARY)[0]
  out = lm(['x'] * 3, np.array([r for _, r in rows], dtype=object))
  assert out['nll_per_token'] == pytest.approx(1.0)

"""Trivial baselines a trained model has to beat, scored like the model.

Each baseline is computed on the very examples `seqio.Evaluator` scores for a
task split (same preprocessing, lengths, order and `num_examples` cut) and
reported through the task's own metric functions, so its number sits beside
the model's without any conversion:

- `unigram_language_model`: every token predicted from its frequency in the
  training split (add-one smoothed), no context at all. A language model that
  does not beat its bits per byte has learned nothing about order.
- `lead_summaries`: each input's first bytes as its summary, as many tokens
  as the model may write; ROUGE as the task reports it.
"""
from typing import Dict, Iterator, List, Mapping, Optional

import numpy as np

from fovea_jax.evaluation import metrics
from fovea_jax.tensorflow_runtime import seqio


def eval_examples(task: seqio.Task, split: str,
                  task_feature_lengths: Mapping[str, int],
                  num_examples: Optional[int] = None) -> Iterator[dict]:
  """The examples seqio.Evaluator scores for `split`, as numpy dicts."""
  dataset = task.get_dataset(sequence_length=dict(task_feature_lengths),
                             split=split, shuffle=False, num_epochs=1)
  if num_examples is not None:
    dataset = dataset.take(num_examples)
  return dataset.as_numpy_iterator()


def token_counts(task: seqio.Task, split: str = 'train',
                 chunk_length: int = 65536) -> np.ndarray:
  """How often each target token id occurs in `split` (a language-model task:
  its chunks cover the text once, whatever `chunk_length`)."""
  vocab_size = task.output_features['targets'].vocabulary.vocab_size
  counts = np.zeros(vocab_size, np.int64)
  for example in eval_examples(task, split, {'targets': chunk_length}):
    counts += np.bincount(example['targets'], minlength=vocab_size)[:vocab_size]
  return counts


def _task_metrics(metric_fns, targets, **model_output) -> Dict[str, float]:
  result = {}
  for metric_fn in metric_fns:
    result.update({name: float(value) for name, value in
                   metric_fn(targets, **model_output).items()})
  return result


def _target_text(task: seqio.Task, example: dict) -> str:
  """The reference text seqio's metrics use: pretokenized if kept, else decoded,
  then the task's postprocessor."""
  target = example.get('targets_pretokenized')
  if target is None:
    target = task.output_features['targets'].vocabulary.decode(
        example['targets'].tolist())
  if isinstance(target, bytes):
    target = target.decode('utf-8')
  return task.postprocess_fn(target, example=example, is_target=True)


def unigram_language_model(task: seqio.Task, split: str,
                           task_feature_lengths: Mapping[str, int],
                           num_examples: Optional[int] = None,
                           train_split: str = 'train') -> Dict[str, float]:
  """The task's score metrics (bits_per_byte, ...) of the training split's
  token frequencies, on the examples the evaluator scores."""
  counts = token_counts(task, train_split).astype(np.float64) + 1.0
  log_probs = np.log(counts / counts.sum())
  targets: List[str] = []
  scores = []
  for example in eval_examples(task, split, task_feature_lengths, num_examples):
    tokens = example['targets']
    tokens = tokens[tokens > 0]  # The evaluator scores every non-pad target.
    targets.append(_target_text(task, example))
    scores.append((float(log_probs[tokens].sum()), float(tokens.size)))
  if not scores:
    raise ValueError(f'{task.name} has no {split!r} examples to score.')
  return _task_metrics(task.score_metric_fns, targets, scores=scores)


def lead_summaries(task: seqio.Task, split: str,
                   task_feature_lengths: Mapping[str, int],
                   num_examples: Optional[int] = None) -> Dict[str, float]:
  """The task's prediction metrics (ROUGE) of each input's first
  `targets length - 1` tokens (what the model may write before EOS) taken as
  its summary, on the examples the evaluator scores."""
  vocabulary = task.output_features['targets'].vocabulary
  lead_length = task_feature_lengths['targets'] - 1
  targets, leads = [], []
  for example in eval_examples(task, split, task_feature_lengths, num_examples):
    inputs = example['inputs']
    lead = vocabulary.decode(inputs[inputs > 1][:lead_length].tolist())
    leads.append(task.postprocess_fn(lead, example=example, is_target=False))
    targets.append(_target_text(task, example))
  if not targets:
    raise ValueError(f'{task.name} has no {split!r} examples to score.')
  return _task_metrics(task.predict_metric_fns, targets, predictions=leads)

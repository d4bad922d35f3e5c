"""Long-range diagnostic tasks, generated offline from a seed (byte level).

  diagnostic_associative_recall   many keys, each asked again later (MQAR)
  diagnostic_fact_retrieval       four facts in filler, queried at the end
  diagnostic_frequent_symbol      the most frequent symbol of a distant region
  diagnostic_mixture              the three, in equal parts

Language-modelling tasks (`targets` only, decoder-only models): an example is
exactly `TASK_FEATURE_LENGTHS['targets']` bytes, generated from (split, index,
length) by `diagnostic_sources` (what each task asks and what its distance
means is documented there and in docs/data.md). Training is plain next-byte
prediction over the whole text; evaluation (`python -m fovea_jax.eval`) scores
only the answers, teacher-forced: an answer is right when every one of its
bytes is the model's most likely next byte, which is what greedy decoding
would produce. `metrics.answer_accuracy` reports accuracy overall, per
distance bin and per group.
"""
import functools

import numpy as np

from fovea_jax.evaluation import metrics
from fovea_jax.tasks import diagnostic_sources
from fovea_jax.tasks import registration
from fovea_jax.tasks import vocabularies
from fovea_jax.tensorflow_runtime import seqio
from fovea_jax.tensorflow_runtime import tf

PREFIX = 'diagnostic_'
MIXTURE = 'diagnostic_mixture'
TASKS = tuple(PREFIX + name for name in diagnostic_sources.GENERATORS)
# Examples per split; training draws from 2^20 distinct examples.
SPLIT_SIZES = {'train': 1 << 20, 'validation': 512, 'test': 512}
# ByteVocabulary: token id = byte + 3 (0 pad, 1 EOS, 2 unknown).
_BYTE_OFFSET = 3


def _indices(split, shuffle_files=False, seed=None):
  del shuffle_files, seed  # Examples are a function of their index.
  if split not in SPLIT_SIZES:
    raise ValueError(f'Unknown split {split!r} for the diagnostic tasks; use '
                     f'one of {tuple(SPLIT_SIZES)}.')
  return tf.data.Dataset.range(SPLIT_SIZES[split]).map(
      lambda i: {'index': i})


def _answers(target_or_prediction, example=None, is_target=False):
  """The evaluated answers of an example: what `metrics.answer_accuracy`
  reads as its targets."""
  if not is_target:
    return target_or_prediction
  return {key: np.asarray(example[f'answer_{key}']).tolist()
          for key in ('start', 'end', 'distance', 'group')}


def register():
  for name in diagnostic_sources.GENERATORS:
    registration.add_task(
        PREFIX + name,
        source=seqio.FunctionDataSource(
            functools.partial(_split_source, name=name),
            splits=tuple(SPLIT_SIZES)),
        preprocessors=[_generate],
        output_features=registration.language_model_features(
            vocabularies.BYTE_VOCABULARY),
        postprocess_fn=_answers,
        metric_fns=[metrics.answer_accuracy])
  if MIXTURE in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(MIXTURE)
  seqio.MixtureRegistry.add(MIXTURE, list(TASKS), default_rate=1.0)


def _split_source(split, shuffle_files=False, seed=None, *, name):
  # seqio tells the source its split and the preprocessors the lengths: the
  # source writes (task, split, index) into each example for `_generate`.
  return _indices(split, shuffle_files, seed).map(
      lambda ex: {**ex, 'task': name, 'split': split})


def _generate(dataset, sequence_length):
  if not sequence_length or not sequence_length.get('targets'):
    raise ValueError('The diagnostic tasks build examples of the target '
                     "length: give TASK_FEATURE_LENGTHS = {'targets': "
                     '<length>}.')
  length = int(sequence_length['targets'])

  def make(task, split, index):
    text, answers = diagnostic_sources.example(
        task.decode(), split.decode(), int(index), length)
    tokens = np.frombuffer(text.encode('ascii'), np.uint8).astype(np.int32)
    columns = np.asarray(answers, np.float64).reshape(-1, 4)
    return (tokens + _BYTE_OFFSET, columns[:, 0].astype(np.int32),
            columns[:, 1].astype(np.int32), columns[:, 2].astype(np.int32),
            columns[:, 3].astype(np.float32))

  def to_example(ex):
    tokens, start, end, distance, group = tf.numpy_function(
        make, [ex['task'], ex['split'], ex['index']],
        [tf.int32, tf.int32, tf.int32, tf.int32, tf.float32], stateful=False)
    tokens.set_shape([length])
    for column in (start, end, distance, group):
      column.set_shape([None])
    return {'targets': tokens, 'answer_start': start, 'answer_end': end,
            'answer_distance': distance, 'answer_group': group}

  return dataset.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)


register()

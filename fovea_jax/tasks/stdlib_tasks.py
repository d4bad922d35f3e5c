"""Offline byte-level tasks over the Python standard library's sources.

`stdlib_summarization`: module source without its docstring -> the first
paragraph of that docstring. `stdlib_outline`: each module (without its
docstring) cut into consecutive windows of at most 255 bytes of whole lines ->
the names the window's `def` and `class` lines define, in order (a summary
whose every word is somewhere in the input; windows that define nothing are
left out). `stdlib_lm`: the full sources, cut into
chunks of the target length. Both split modules by a hash of their path
(`stdlib_sources.split_of`) and need no download.
"""
from fovea_jax.tasks import registration
from fovea_jax.tasks import stdlib_sources
from fovea_jax.tasks import vocabularies
from fovea_jax.tensorflow_runtime import seqio
from fovea_jax.tensorflow_runtime import tf

SUMMARIZATION_TASK = 'stdlib_summarization'
LANGUAGE_MODEL_TASK = 'stdlib_lm'
OUTLINE_TASK = 'stdlib_outline'


def _check_split(split):
  if split not in stdlib_sources.SPLITS:
    raise ValueError(f'Unknown split {split!r} for the stdlib tasks; use one '
                     f'of {stdlib_sources.SPLITS}.')


def summarization_dataset(split, shuffle_files=False, seed=None):
  del shuffle_files, seed  # One in-memory source; seqio shuffles examples.
  _check_split(split)
  modules = stdlib_sources.modules_by_split()[split]
  return tf.data.Dataset.from_tensor_slices({
      'document': [m.source_without_docstring for m in modules],
      'summary': [m.docstring_summary for m in modules],
  })


def outline_dataset(split, shuffle_files=False, seed=None):
  del shuffle_files, seed
  _check_split(split)
  pairs = [pair for m in stdlib_sources.modules_by_split()[split]
           for pair in stdlib_sources.outline_windows(m.source_without_docstring)
           if pair[1]]
  return tf.data.Dataset.from_tensor_slices({
      'source': [source for source, _ in pairs],
      'names': [names for _, names in pairs],
  })


def language_model_dataset(split, shuffle_files=False, seed=None):
  del shuffle_files, seed
  _check_split(split)
  modules = stdlib_sources.modules_by_split()[split]
  return tf.data.Dataset.from_tensor_slices(
      {'text': [m.source for m in modules]})


registration.add_summarization_task(
    SUMMARIZATION_TASK,
    source=seqio.FunctionDataSource(
        summarization_dataset, splits=stdlib_sources.SPLITS),
    vocabulary=vocabularies.BYTE_VOCABULARY,
    input_key='document', target_key='summary')

registration.add_summarization_task(
    OUTLINE_TASK,
    source=seqio.FunctionDataSource(outline_dataset,
                                    splits=stdlib_sources.SPLITS),
    vocabulary=vocabularies.BYTE_VOCABULARY,
    input_key='source', target_key='names')

registration.add_language_model_task(
    LANGUAGE_MODEL_TASK,
    source=seqio.FunctionDataSource(
        language_model_dataset, splits=stdlib_sources.SPLITS),
    vocabulary=vocabularies.BYTE_VOCABULARY,
    text_key='text')

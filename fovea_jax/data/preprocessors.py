"""Preprocessors seqio does not provide, and the standard step lists.

Summarization tasks run seqio's own `tokenize` and `append_eos_after_trim`.
Language-modelling tasks cut each long token sequence (a book, a module, a
block of enwik8) into consecutive pieces of the feature lengths instead of
truncating it, so no text is thrown away; given an `inputs` length too, each
piece starts with a prompt of that length.
"""
import functools
from typing import Mapping

from fovea_jax.tensorflow_runtime import seqio
from fovea_jax.tensorflow_runtime import tf


def split_tokens_into_examples(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int]) -> tf.data.Dataset:
  """Cuts each token sequence `targets` into consecutive examples.

  With `sequence_length` {'targets': G}: pieces of G tokens in `targets`. With
  {'inputs': P, 'targets': G} (continuing text with a decoder-only model):
  pieces of P + G tokens, the first P of each in `inputs` (the prompt), the
  rest in `targets` (the continuation). The last piece of a sequence keeps what
  is left, so it is shorter (all prompt, empty targets, if under P tokens);
  every other feature is dropped because it no longer describes a piece.
  """
  lengths = {key: sequence_length.get(key, 0) for key in ('inputs', 'targets')}
  for key, length in lengths.items():
    if not isinstance(length, int) or length < 0 or (key == 'targets' and
                                                     not length):
      raise ValueError(f'sequence_length[{key!r}] must be a positive int, got '
                       f'{sequence_length.get(key)!r}.')
  prompt_length = lengths['inputs']
  length = prompt_length + lengths['targets']

  def to_chunks(example):
    tokens = example['targets']
    num_tokens = tf.size(tokens)
    num_chunks = (num_tokens + length - 1) // length
    padded = tf.pad(tokens, [[0, num_chunks * length - num_tokens]])
    chunk_lengths = tf.minimum(length, num_tokens - tf.range(num_chunks) * length)
    chunks = tf.RaggedTensor.from_tensor(
        tf.reshape(padded, [num_chunks, length]), lengths=chunk_lengths)
    if not prompt_length:
      return tf.data.Dataset.from_tensor_slices({'targets': chunks})
    return tf.data.Dataset.from_tensor_slices({
        'inputs': chunks[:, :prompt_length],
        'targets': chunks[:, prompt_length:]})

  return dataset.flat_map(to_chunks)


def cuts_prompts(task_or_mixture) -> bool:
  """Whether each task cuts an `inputs` prompt when TASK_FEATURE_LENGTHS gives
  one (the language-model tasks, through `split_tokens_into_examples`)."""
  return all(split_tokens_into_examples in task.preprocessors
             for task in seqio.get_subtasks(task_or_mixture))


def summarization_preprocessors(input_key: str, target_key: str):
  """Steps for a `{input_key: text, target_key: text}` summarization source."""
  return [
      functools.partial(
          seqio.preprocessors.rekey,
          key_map={'inputs': input_key, 'targets': target_key}),
      seqio.preprocessors.tokenize,
      seqio.CacheDatasetPlaceholder(),
      seqio.preprocessors.append_eos_after_trim,
  ]


def language_model_preprocessors(text_key: str):
  """Steps for a long-text source: tokenize, then cut into target lengths."""
  return [
      functools.partial(seqio.preprocessors.rekey, key_map={'targets': text_key}),
      # The text of a chunk is not kept: it would be the whole document.
      functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),
      seqio.CacheDatasetPlaceholder(),
      split_tokens_into_examples,
  ]

"""Preprocessors seqio does not provide, and the standard step lists.

Summarization tasks run seqio's own `tokenize` and `append_eos_after_trim`.
Language-modelling tasks cut each long token sequence (a book, a module, a
block of enwik8) into consecutive pieces of the target length instead of
truncating it, so no text is thrown away.
"""
import functools
from typing import Mapping

import seqio

from fovea_jax.data.tensorflow_setup import tf


def split_tokens_to_targets_length(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int]) -> tf.data.Dataset:
  """Splits `targets` into consecutive chunks of `sequence_length['targets']`.

  The last chunk of each example keeps what is left (it is shorter); every other
  feature is dropped because it no longer describes a chunk.
  """
  length = sequence_length['targets']
  if not isinstance(length, int) or length <= 0:
    raise ValueError(
        f"sequence_length['targets'] must be a positive int, got {length!r}.")

  def to_chunks(example):
    tokens = example['targets']
    num_tokens = tf.size(tokens)
    num_chunks = (num_tokens + length - 1) // length
    padded = tf.pad(tokens, [[0, num_chunks * length - num_tokens]])
    chunk_lengths = tf.minimum(length, num_tokens - tf.range(num_chunks) * length)
    chunks = tf.RaggedTensor.from_tensor(
        tf.reshape(padded, [num_chunks, length]), lengths=chunk_lengths)
    return tf.data.Dataset.from_tensor_slices({'targets': chunks})

  return dataset.flat_map(to_chunks)


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
      split_tokens_to_targets_length,
  ]

"""Packing that stays cheap at long lengths.

seqio packs by first batching as many examples as the longest feature length
(`padded_batch(max(lengths))`) and then packing each batch greedily. At long
context lengths that batch is enormous: with TASK_FEATURE_LENGTHS of 16384 on
the stdlib task it held 16384 examples x 16384 tokens, took ~10 GB and ~45 s
before the first batch. Packing here runs seqio's own greedy packer over
windows of at most `PACKING_WINDOW` examples instead: the same packed rows
within a window, bounded memory, and at most one partly filled row more per
window.
"""
import functools
from typing import Mapping, Optional, Type

from fovea_jax.tensorflow_runtime import seqio
from fovea_jax.tensorflow_runtime import tf

PACKING_WINDOW = 128


def trim_and_pack_dataset(dataset: tf.data.Dataset,
                          feature_lengths: Mapping[str, int],
                          window: Optional[int] = None) -> tf.data.Dataset:
  """seqio's `trim_and_pack_dataset` over windows of `window` examples.

  `window` defaults to `PACKING_WINDOW`.
  """
  window = window or PACKING_WINDOW
  for key in feature_lengths:
    if key not in dataset.element_spec:
      raise ValueError(f'Feature {key!r} to pack is not in the dataset; it has '
                       f'{sorted(dataset.element_spec)}.')
  dataset = dataset.map(
      lambda x: {k: x[k][:length] for k, length in feature_lengths.items()},
      num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.padded_batch(
      min(window, max(feature_lengths.values())),
      padded_shapes={k: [-1] for k in feature_lengths})
  # The greedy packer itself is seqio's; only the window size differs.
  dataset = seqio.utils._pack_with_tf_ops(dataset, feature_lengths)  # pylint: disable=protected-access

  def set_shapes(example):
    for key, value in example.items():
      base_key = key.replace('_segment_ids', '').replace('_positions', '')
      value.set_shape([feature_lengths[base_key]])
    return example

  return dataset.map(set_shapes, num_parallel_calls=tf.data.AUTOTUNE)


@functools.lru_cache(maxsize=None)
def with_windowed_packing(
    converter_cls: Type[seqio.FeatureConverter]) -> Type[seqio.FeatureConverter]:
  """`converter_cls` packing through `trim_and_pack_dataset` above."""

  def _pack_or_pad(self, dataset, packed_lengths):
    if self.pack and not self._use_custom_packing_ops:  # pylint: disable=protected-access
      return trim_and_pack_dataset(dataset, packed_lengths)
    return converter_cls._pack_or_pad(self, dataset, packed_lengths)  # pylint: disable=protected-access

  return type(f'WindowPacked{converter_cls.__name__}', (converter_cls,),
              {'_pack_or_pad': _pack_or_pad,
               '__doc__': f'{converter_cls.__name__} with windowed packing.'})

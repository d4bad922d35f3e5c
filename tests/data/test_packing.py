"""Windowed packing: seqio's packed rows, with bounded windows."""
import numpy as np
import pytest

from fovea_jax.data import packing
from fovea_jax.tensorflow_runtime import seqio
from fovea_jax.tensorflow_runtime import tf

_LENGTHS = {'inputs': 8, 'targets': 4}


def _examples(num, max_inputs=6, max_targets=3):
  rng = np.random.default_rng(0)
  return [{'inputs': rng.integers(3, 50, rng.integers(1, max_inputs + 1)),
           'targets': rng.integers(3, 50, rng.integers(1, max_targets + 1))}
          for _ in range(num)]


def _dataset(examples):
  return tf.data.Dataset.from_generator(
      lambda: iter(examples),
      output_signature={k: tf.TensorSpec([None], tf.int32) for k in _LENGTHS})


def _rows(dataset):
  return [{k: v.tolist() for k, v in row.items()}
          for row in dataset.as_numpy_iterator()]


@pytest.mark.slow
def test_same_rows_as_seqio_when_the_window_holds_everything():
  examples = _examples(40)
  ours = _rows(packing.trim_and_pack_dataset(_dataset(examples), _LENGTHS))
  seqios = _rows(seqio.utils.trim_and_pack_dataset(_dataset(examples),
                                                   _LENGTHS))
  assert ours == seqios
  assert max(max(r['inputs_segment_ids']) for r in ours) > 1  # It packs.


def test_windows_bound_the_examples_packed_per_step():
  examples = _examples(40)
  rows = _rows(packing.trim_and_pack_dataset(_dataset(examples), _LENGTHS,
                                             window=3))
  assert all(max(r['inputs_segment_ids']) <= 3 for r in rows)
  # Every token survives, in order.
  packed = [t for r in rows for t in r['inputs'] if t]
  assert packed == [t for e in examples for t in e['inputs'].tolist()]


@pytest.mark.slow
def test_converters_pack_through_the_window(monkeypatch):
  converter_cls = packing.with_windowed_packing(seqio.EncDecFeatureConverter)
  assert packing.with_windowed_packing(seqio.EncDecFeatureConverter) is (
      converter_cls)

  def max_segments(window):
    monkeypatch.setattr(packing, 'PACKING_WINDOW', window)
    short = _examples(40, max_inputs=2, max_targets=1)  # Up to 4 a row.
    rows = converter_cls(pack=True)(_dataset(short), _LENGTHS)
    return max(r['encoder_segment_ids'].max() for r in rows.as_numpy_iterator())

  assert max_segments(2) == 2
  assert max_segments(128) > 2
  unpacked = next(converter_cls(pack=False)(_dataset(_examples(1)), _LENGTHS)
                  .as_numpy_iterator())
  assert 'encoder_segment_ids' not in unpacked

"""A deterministic, resumable iterator of numpy batches.

Its position is a small JSON-able dict (`get_state()`): the number of batches
handed out, the shuffle seed actually used, and a fingerprint of everything
that decides the batch order. Saved with a checkpoint and passed back
(`DataIterator(cfg, state=...)` or `restore(state)`), it yields exactly the
batches an uninterrupted run would have seen next. Resuming re-reads and skips
the consumed batches (no tf.data internals are saved), which costs input
pipeline time proportional to the position but works across TensorFlow
versions and needs nothing but the JSON.
"""
import json
import random
from typing import Any, Dict, Mapping, Optional, Tuple, Type

import jax
from jax.experimental import multihost_utils
import numpy as np

from fovea_jax.data import pipeline
from fovea_jax.data.config import DatasetConfig
from fovea_jax.data.errors import DataError
from fovea_jax.tensorflow_runtime import seqio


def _seed_shared_by_all_processes() -> int:
  seed = np.int32(random.SystemRandom().randrange(2**31))
  if jax.process_count() > 1:
    # One seed for all, so the state any one process saves fits every process.
    seed = multihost_utils.broadcast_one_to_all(seed)
  return int(seed)


class DataIterator:
  """Iterates this process's batches of `cfg` and knows its position."""

  def __init__(
      self,
      cfg: DatasetConfig,
      *,
      shard_info: Optional[seqio.ShardInfo] = None,
      feature_converter_cls: Optional[Type[seqio.FeatureConverter]] = None,
      num_epochs: Optional[int] = None,
      state: Optional[Mapping[str, Any]] = None,
  ):
    self._cfg = cfg
    self._shard_info = shard_info or pipeline.default_shard_info()
    self._feature_converter_cls = feature_converter_cls
    self._num_epochs = num_epochs
    # A shuffled run needs a concrete seed to be repeatable; pick one and keep
    # it in the state when the config leaves it open (T5X's seed=None).
    self._seed = cfg.seed
    if self._seed is None and cfg.shuffle:
      self._seed = _seed_shared_by_all_processes()
    self._batches_consumed = 0
    self._numpy_iterator = None
    if state is not None:
      self.restore(state)
    else:
      self._build()

  def _fingerprint(self) -> Dict[str, Any]:
    cfg = self._cfg
    return {
        'mixture_or_task_name': cfg.mixture_or_task_name,
        'task_feature_lengths': dict(sorted(cfg.task_feature_lengths.items())),
        'split': cfg.split,
        'batch_size': cfg.batch_size,
        'shuffle': cfg.shuffle,
        'pack': cfg.pack,
        'use_cached': cfg.use_cached,
        # Not the shard index: every process restores the state that one
        # process saved (positions and seeds agree across processes).
        'num_shards': self._shard_info.num_shards,
        'feature_converter': (self._feature_converter_cls.__name__
                              if self._feature_converter_cls else 'default'),
        'num_epochs': self._num_epochs,
    }

  def _build(self):
    self._dataset = pipeline.get_dataset(
        self._cfg, shard_info=self._shard_info,
        feature_converter_cls=self._feature_converter_cls,
        num_epochs=self._num_epochs, seed=self._seed,
        skip_batches=self._batches_consumed)
    self._numpy_iterator = self._dataset.as_numpy_iterator()

  def get_state(self) -> Dict[str, Any]:
    """JSON-able position: save it with the checkpoint of the same step."""
    return {'batches_consumed': self._batches_consumed, 'seed': self._seed,
            'fingerprint': self._fingerprint()}

  def restore(self, state: Mapping[str, Any]) -> None:
    """Continues from `state` (from `get_state()` of an identical config)."""
    state = json.loads(json.dumps(state))  # Same form whether saved or not.
    expected = json.loads(json.dumps(self._fingerprint()))
    saved = state.get('fingerprint', {})
    if saved != expected:
      changed = sorted(k for k in set(saved) | set(expected)
                       if saved.get(k) != expected.get(k))
      raise ValueError(
          'The saved data position belongs to a different input pipeline; '
          'these settings changed: ' + ', '.join(
              f'{k} (saved {saved.get(k)!r}, now {expected.get(k)!r})'
              for k in changed) +
          '. Restore with the original settings or start the data afresh.')
    batches = state['batches_consumed']
    if not isinstance(batches, int) or batches < 0:
      raise ValueError(f'Bad batches_consumed {batches!r} in the data state.')
    self._seed = state['seed']
    self._batches_consumed = batches
    self._build()

  @property
  def dataset(self):
    """The underlying tf.data pipeline (from the current position)."""
    return self._dataset

  @property
  def per_process_batch_size(self) -> int:
    return pipeline.per_process_batch_size(self._cfg, self._shard_info)

  def global_shapes_and_dtypes(self) -> Dict[str, Tuple[Tuple[int, ...], Any]]:
    """{feature: (shape with the global batch, numpy dtype)} for model init."""
    return {
        name: ((self._cfg.batch_size, *spec.shape[1:]),
               spec.dtype.as_numpy_dtype)
        for name, spec in self._dataset.element_spec.items()
    }

  def __iter__(self):
    return self

  def __next__(self) -> Dict[str, np.ndarray]:
    try:
      batch = next(self._numpy_iterator)
    except StopIteration:
      if self._num_epochs is not None:
        raise
      # Repeated forever, the data ends only if it has no example at all.
      # fovea_jax's own sources refuse such data when the dataset is built;
      # this names the task for any other (and for a shard left empty).
      raise DataError(
          f'task {self._cfg.mixture_or_task_name!r}, split {self._cfg.split!r}',
          f'no examples (read as shard {self._shard_info.index + 1} of '
          f'{self._shard_info.num_shards})',
          'give the split at least one example per data shard (process)'
      ) from None
    self._batches_consumed += 1
    return batch

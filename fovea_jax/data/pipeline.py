"""Builds batched seqio datasets from a `DatasetConfig`, one shard per process.

Each process reads its own shard (`seqio.ShardInfo(process_index,
process_count)`) and batches `batch_size / process_count` examples, as T5X does;
the trainer assembles global arrays from the per-process batches.
"""
from typing import Optional, Type

import jax

from fovea_jax.data import packing
from fovea_jax.data import preprocessors
from fovea_jax.data.config import DatasetConfig
from fovea_jax.data.config import get_mixture_or_task
from fovea_jax.tensorflow_runtime import seqio
from fovea_jax.tensorflow_runtime import tf


def default_shard_info() -> seqio.ShardInfo:
  return seqio.ShardInfo(index=jax.process_index(),
                         num_shards=jax.process_count())


def per_process_batch_size(cfg: DatasetConfig,
                           shard_info: seqio.ShardInfo) -> int:
  if cfg.batch_size % shard_info.num_shards:
    raise ValueError(
        f'DatasetConfig.batch_size={cfg.batch_size} is not divisible by the '
        f'{shard_info.num_shards} data shards (processes); use a multiple.')
  return cfg.batch_size // shard_info.num_shards


def feature_converter_cls_for(task_or_mixture, task_feature_lengths=()
                              ) -> Type[seqio.FeatureConverter]:
  """Encoder-decoder for tasks with `inputs`; otherwise a decoder-only LM,
  prompted (prefix LM) when `task_feature_lengths` gives `inputs` a length."""
  if 'inputs' in task_or_mixture.output_features:
    return seqio.EncDecFeatureConverter
  if 'inputs' in task_feature_lengths:
    return seqio.PrefixLMFeatureConverter
  return seqio.LMFeatureConverter


def make_feature_converter(
    cfg: DatasetConfig,
    feature_converter_cls: Optional[Type[seqio.FeatureConverter]] = None,
    task_or_mixture=None) -> seqio.FeatureConverter:
  task_or_mixture = task_or_mixture or get_mixture_or_task(
      cfg.mixture_or_task_name, cfg.module)
  cls = feature_converter_cls or feature_converter_cls_for(
      task_or_mixture, cfg.task_feature_lengths)
  if cfg.pack and not cfg.use_custom_packing_ops:
    cls = packing.with_windowed_packing(cls)
  return cls(pack=cfg.pack, use_custom_packing_ops=cfg.use_custom_packing_ops)


def check_features_match(cfg: DatasetConfig, task_or_mixture) -> None:
  """TASK_FEATURE_LENGTHS must give a length for each of the task's features,
  and may give a prompt length (`inputs`) to a language-model task."""
  features = set(task_or_mixture.output_features)
  optional = ({'inputs'} - features
              if preprocessors.cuts_prompts(task_or_mixture) else set())
  given = set(cfg.task_feature_lengths)
  if not features <= given <= features | optional:
    raise ValueError(
        f'TASK_FEATURE_LENGTHS has {sorted(given)} but task '
        f'{cfg.mixture_or_task_name!r} has features {sorted(features)}'
        + (f' (and optionally {sorted(optional)})' if optional else '') +
        '; give exactly one positive length per feature.')


def check_split(cfg: DatasetConfig, task_or_mixture) -> None:
  """Every task must offer `cfg.split` (where the task knows its splits)."""
  for task in seqio.get_subtasks(task_or_mixture):
    splits = list(task.source.splits or ())
    if splits and cfg.split not in splits:
      raise ValueError(
          f'Task {task.name!r} has no split {cfg.split!r}; it has {splits}.')


def load_vocabularies(task_or_mixture) -> None:
  """Loads each feature's vocabulary now, outside any tf.data function.

  A missing SentencePiece file then fails here with its own message instead of
  deep inside a traced tf.data map.
  """
  for feature in task_or_mixture.output_features.values():
    _ = feature.vocabulary.vocab_size


def ordered_examples(
    cfg: DatasetConfig,
    feature_converter_cls: Optional[Type[seqio.FeatureConverter]] = None,
    num_examples: Optional[int] = None) -> tf.data.Dataset:
  """cfg's split once, in file order, converted but unbatched.

  What inference and scoring walk (batched by the evaluator's
  `padded_batches`): no shuffling and no sharding, so every process and every
  run sees the same examples in the same order.
  """
  dataset = seqio.get_dataset(
      cfg.mixture_or_task_name,
      task_feature_lengths=dict(cfg.task_feature_lengths),
      dataset_split=cfg.split, shuffle=False, num_epochs=1,
      feature_converter=make_feature_converter(cfg, feature_converter_cls),
      use_cached=cfg.use_cached, seed=cfg.seed)
  if num_examples is not None:
    dataset = dataset.take(num_examples)
  return dataset


def get_dataset(
    cfg: DatasetConfig,
    *,
    shard_info: Optional[seqio.ShardInfo] = None,
    feature_converter_cls: Optional[Type[seqio.FeatureConverter]] = None,
    num_epochs: Optional[int] = None,
    seed: Optional[int] = None,
    skip_batches: int = 0,
) -> tf.data.Dataset:
  """This process's batches of model features (`decoder_target_tokens`...).

  Args:
    cfg: the dataset description.
    shard_info: which shard this process reads; default one per JAX process.
    feature_converter_cls: the model's converter; by default chosen from the
      task's features (see `feature_converter_cls_for`).
    num_epochs: passes over the data; None repeats forever (training).
    seed: overrides `cfg.seed` (the resumable iterator fixes one).
    skip_batches: batches to drop from the start (resuming).
  """
  task_or_mixture = get_mixture_or_task(cfg.mixture_or_task_name, cfg.module)
  check_features_match(cfg, task_or_mixture)
  check_split(cfg, task_or_mixture)
  load_vocabularies(task_or_mixture)
  shard_info = shard_info or default_shard_info()
  batch_size = per_process_batch_size(cfg, shard_info)
  dataset = seqio.get_dataset(
      cfg.mixture_or_task_name,
      task_feature_lengths=dict(cfg.task_feature_lengths),
      dataset_split=cfg.split,
      shuffle=cfg.shuffle,
      num_epochs=num_epochs,
      feature_converter=make_feature_converter(
          cfg, feature_converter_cls, task_or_mixture),
      shard_info=shard_info,
      use_cached=cfg.use_cached,
      seed=cfg.seed if seed is None else seed,
      trim_output_features=cfg.trim_output_features)
  dataset = dataset.batch(batch_size, drop_remainder=True)
  if skip_batches:
    dataset = dataset.skip(skip_batches)
  return dataset.prefetch(tf.data.AUTOTUNE)

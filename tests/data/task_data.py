"""Helpers shared by the task tests: prepared-TFDS metadata, task examples."""
import os

import seqio
import tensorflow_datasets as tfds

SPLITS = ('train', 'validation', 'test')


def write_split_metadata(tfds_name, num_examples, data_dir, splits=SPLITS):
  """Writes the dataset_info.json of a dataset prepared with `splits`."""
  builder = tfds.builder(tfds_name, data_dir=data_dir)
  template = tfds.core.naming.ShardedFileTemplate(
      data_dir=builder.data_dir, dataset_name=builder.name,
      filetype_suffix='tfrecord', split='train')
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=[num_examples],
                          num_bytes=0,
                          filename_template=template.replace(split=split))
      for split in splits]))
  os.makedirs(builder.data_dir, exist_ok=True)
  builder.info.write_to_directory(builder.data_dir)


def examples(task, lengths, split='train', take=None):
  """The task's preprocessed examples of `split`, in order, as numpy."""
  dataset = seqio.get_mixture_or_task(task).get_dataset(
      lengths, split=split, shuffle=False)
  return list(dataset.take(take or -1).as_numpy_iterator())

"""Tasks read from local files: WCEP-10 (JSONL) and enwik8 (raw bytes).

WCEP-10: `{train,validation,test}.jsonl` in `paths.wcep10_dir()`, in the
format of `summary_jsonl` (one {"document", "summary"} object per line). The
split a run reads is checked whole when its dataset is built, so a bad line
stops the run before training with a `DataError` naming it.

enwik8: the raw file at `paths.enwik8_file()`, split as usual into the first
90%, next 5% and last 5% of its bytes, read in blocks of ENWIK8_BLOCK_BYTES.
It is bytes, not lines: newlines are tokens like any other byte, so empty lines
are text and a line of any length costs at most one block of memory; bytes
that are not UTF-8 are fine too (the vocabulary is bytes). Only a missing file
and a split with no bytes are errors.
"""
import itertools
import os

from fovea_jax.data.errors import DataError
from fovea_jax.tasks import paths
from fovea_jax.tasks import registration
from fovea_jax.tasks import summary_jsonl
from fovea_jax.tasks import vocabularies
from fovea_jax.tensorflow_runtime import seqio
from fovea_jax.tensorflow_runtime import tf

SPLITS = ('train', 'validation', 'test')
# Cumulative byte fractions where each enwik8 split ends.
ENWIK8_SPLIT_ENDS = {'train': 0.90, 'validation': 0.95, 'test': 1.0}
# Blocks handed to the tokenizer; each is then cut into target-length chunks.
ENWIK8_BLOCK_BYTES = 1 << 20


def _check_split(split):
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; use one of {SPLITS}.')


def wcep10_dataset(split, shuffle_files=False, seed=None):
  del shuffle_files, seed
  _check_split(split)
  folder = paths.wcep10_dir()
  path = os.path.join(folder, f'{split}.jsonl')
  if not os.path.isfile(path):
    raise DataError(
        path if os.path.isdir(folder) else folder,
        f'no WCEP-10 {split} split file' if os.path.isdir(folder) else
        'the WCEP-10 folder does not exist',
        f'put {", ".join(s + ".jsonl" for s in SPLITS)} in the WCEP-10 folder '
        '(FOVEA_WCEP10_DIR or paths.wcep10_dir.path)')
  summary_jsonl.check_file(path)
  return tf.data.Dataset.from_generator(
      lambda: summary_jsonl.read_examples(path),
      output_signature=(tf.TensorSpec([], tf.string),
                        tf.TensorSpec([], tf.string)),
  ).map(lambda d, s: {'document': d, 'summary': s})


def enwik8_byte_range(split, file_size):
  """[start, end) byte offsets of `split` in an enwik8 file of `file_size`."""
  _check_split(split)
  index = SPLITS.index(split)
  start = 0 if index == 0 else int(file_size * ENWIK8_SPLIT_ENDS[SPLITS[index - 1]])
  return start, int(file_size * ENWIK8_SPLIT_ENDS[split])


def _read_blocks(path, start, end):
  with open(path, 'rb') as f:
    f.seek(start)
    position = start
    while position < end:
      block = f.read(min(ENWIK8_BLOCK_BYTES, end - position))
      if not block:
        return
      position += len(block)
      yield block


def _smallest_file_with_every_split() -> int:
  return next(size for size in itertools.count(1)
              if all(start < end for start, end in (
                  enwik8_byte_range(s, size) for s in SPLITS)))


def enwik8_dataset(split, shuffle_files=False, seed=None):
  del shuffle_files, seed
  path = paths.enwik8_file()
  if not os.path.isfile(path):
    raise DataError(
        path, 'a directory, not the enwik8 file' if os.path.isdir(path) else
        'the enwik8 file does not exist',
        'download http://mattmahoney.net/dc/enwik8.zip, unzip it and give the '
        'path of the file `enwik8` (FOVEA_ENWIK8_FILE or '
        'paths.enwik8_file.path)')
  size = os.path.getsize(path)
  start, end = enwik8_byte_range(split, size)
  if start == end:
    raise DataError(
        path, f'the {split} split (bytes {start} to {end} of the file\'s '
        f'{size}) is empty',
        f'give a file of at least {_smallest_file_with_every_split()} bytes '
        '(enwik8 has 100,000,000)')
  return tf.data.Dataset.from_generator(
      lambda: _read_blocks(path, start, end),
      output_signature=tf.TensorSpec([], tf.string),
  ).map(lambda block: {'text': block})


registration.add_summarization_task(
    'wcep10',
    source=seqio.FunctionDataSource(wcep10_dataset, splits=SPLITS),
    vocabulary=vocabularies.SENTENCEPIECE_VOCABULARY,
    input_key='document', target_key='summary')

registration.add_language_model_task(
    'enwik8',
    source=seqio.FunctionDataSource(enwik8_dataset, splits=SPLITS),
    vocabulary=vocabularies.BYTE_VOCABULARY,
    text_key='text')

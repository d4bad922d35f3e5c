"""Tasks read from local files: WCEP-10 (JSONL) and enwik8 (raw bytes).

WCEP-10: `{train,validation,test}.jsonl` in `paths.wcep10_dir()`, one object per
line with `document` (a string, or a list of article strings joined by blank
lines) and `summary`. enwik8: the raw file at `paths.enwik8_file()`, split as
usual into the first 90%, next 5% and last 5% of its bytes, read in blocks.
"""
import json
import os

from fovea_jax.tasks import paths
from fovea_jax.tasks import registration
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


def read_wcep10_jsonl(path):
  """Yields (document, summary) pairs; names the line of any bad record."""
  with open(path, encoding='utf-8') as f:
    for line_number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        document, summary = record['document'], record['summary']
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(
            f'{path}:{line_number} is not a JSON object with "document" and '
            f'"summary" ({e!r}).') from e
      if isinstance(document, list):
        document = '\n\n'.join(document)
      yield document, summary


def wcep10_dataset(split, shuffle_files=False, seed=None):
  del shuffle_files, seed
  _check_split(split)
  path = os.path.join(paths.wcep10_dir(), f'{split}.jsonl')
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'WCEP-10 split file {path} does not exist; the folder must hold '
        f'{", ".join(s + ".jsonl" for s in SPLITS)}.')
  return tf.data.Dataset.from_generator(
      lambda: read_wcep10_jsonl(path),
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


def enwik8_dataset(split, shuffle_files=False, seed=None):
  del shuffle_files, seed
  path = paths.enwik8_file()
  if not os.path.isfile(path):
    raise FileNotFoundError(f'enwik8 file {path} does not exist.')
  start, end = enwik8_byte_range(split, os.path.getsize(path))
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

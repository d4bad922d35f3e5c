"""Bad data stops `train` before training with one line: file, problem, fix.

Each case runs the train entry point in-process (gin files and bindings as on
the command line) and checks the DataError's message and that nothing was
written to MODEL_DIR; one case runs `python -m fovea_jax.train` itself and
checks what a user sees on stderr. Data that is legitimately accepted (blank
lines, records with empty fields, long lines of a byte-level file) is checked
to be read as documented.
"""
import json
import logging
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
from tensorflow_datasets.core import constants as tfds_constants

from fovea_jax import data
from fovea_jax.data.errors import DataError
from fovea_jax.tasks import file_tasks
from fovea_jax.tasks import registration
from fovea_jax.tasks import summary_jsonl
from fovea_jax.tasks import vocabularies
from fovea_jax.tensorflow_runtime import seqio
from fovea_jax.tensorflow_runtime import tf
from tests.data import task_data
from tests.training import gin_runs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
GOOD = json.dumps({'document': 'A document.', 'summary': 'Its summary.'})
LM_MODEL_GIN = ['sizes/decoder_only_tiny.gin', 'attention/dense.gin']


@pytest.fixture(autouse=True)
def clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _train(model_dir, task, lengths=None, split=None, model_gin=None):
  bindings = gin_runs.train_bindings(model_dir, 1, BATCH_SIZE=2) + [
      f'MIXTURE_OR_TASK_NAME = {task!r}']
  if lengths:
    bindings.append(f'TASK_FEATURE_LENGTHS = {lengths}')
  if split:
    bindings.append(f"train/config.DatasetConfig.split = '{split}'")
  return gin_runs.run('train', 'runs/pretrain.gin', bindings,
                      model_gin=model_gin or gin_runs.STANDIN_MODEL_GIN)


def _assert_nothing_written(model_dir):
  assert not os.path.exists(model_dir) or not os.listdir(model_dir)


@pytest.fixture
def wcep10_dir(tmp_path, monkeypatch, use_sentencepiece_model):
  """A WCEP-10 folder of good splits; tests overwrite the ones they break."""
  del use_sentencepiece_model
  folder = tmp_path / 'wcep10'
  folder.mkdir()
  for split in file_tasks.SPLITS:
    (folder / f'{split}.jsonl').write_text(GOOD + '\n')
  monkeypatch.setenv('FOVEA_WCEP10_DIR', str(folder))
  return folder


@pytest.mark.parametrize('content, message', [
    (b'', r'train\.jsonl: the file is empty\. Fix: write one JSON object'),
    (b'\n  \n' + json.dumps({'document': '', 'summary': 'x'}).encode() + b'\n',
     r'train\.jsonl: no usable example: 2 blank lines and 1 records with an '
     r'empty document or summary\. Fix:'),
    (GOOD.encode() + b'\n{"document": "caf\xe9", "summary": "x"}\n',
     r'train\.jsonl:2: byte 18 of the line \(0xe9\) is not UTF-8\. Fix: '
     r'convert the file to UTF-8'),
    (b'{"document": "d", "summary": 42}\n',
     r'train\.jsonl:1: "summary" is a JSON number, not a string\. Fix: write '
     r'"summary" as a string'),
    (b'{"document": ["one", null], "summary": "s"}\n',
     r'train\.jsonl:1: "document"\[1\] is a JSON null, not a string\. Fix:'),
    (b'{"document": {"text": "d"}, "summary": "s"}\n',
     r'"document" is a JSON object, not a string or a list of strings'),
    (b'["d", "s"]\n',
     r'train\.jsonl:1: the line is a JSON array, not an object'),
    (b'{"document": "d", "summary": "s"\n',
     r'train\.jsonl:1: invalid JSON at column 33: Expecting'),
    (b'{"document": "no summary"}\n',
     r'train\.jsonl:1: the object has no "summary" field '
     r'\(it has "document"\)'),
    (b'{"document": "d", "summary": "\\ud800"}\n',
     r'"summary" holds an unpaired surrogate escape \(\\ud800\)'),
], ids=['empty', 'nothing_usable', 'not_utf8', 'summary_number',
        'document_item_null', 'document_object', 'array_line', 'invalid_json',
        'no_summary', 'lone_surrogate'])
def test_bad_jsonl_stops_train_before_it_starts(tmp_path, wcep10_dir, content,
                                                message):
  (wcep10_dir / 'train.jsonl').write_bytes(content)
  with pytest.raises(DataError, match=message):
    _train(tmp_path / 'run', 'wcep10')
  _assert_nothing_written(tmp_path / 'run')


def test_a_line_over_the_bound_is_refused(tmp_path, wcep10_dir, monkeypatch):
  monkeypatch.setattr(summary_jsonl, 'MAX_LINE_BYTES', 1000)
  long_record = json.dumps({'document': 'x' * 2000, 'summary': 's'})
  (wcep10_dir / 'train.jsonl').write_text(GOOD + '\n' + long_record + '\n')
  with pytest.raises(DataError, match=r'train\.jsonl:2: the line is longer '
                     r'than 1000 bytes .*Fix: write one JSON object per line'):
    _train(tmp_path / 'run', 'wcep10')
  _assert_nothing_written(tmp_path / 'run')


def test_a_missing_split_file_is_named(tmp_path, wcep10_dir):
  (wcep10_dir / 'validation.jsonl').unlink()
  with pytest.raises(DataError, match=r'wcep10/validation\.jsonl: no WCEP-10 '
                     r'validation split file\. Fix: put train\.jsonl, '
                     r'validation\.jsonl, test\.jsonl in the WCEP-10 folder'):
    _train(tmp_path / 'run', 'wcep10', split='validation')
  _assert_nothing_written(tmp_path / 'run')


def test_blank_lines_and_empty_records_are_skipped_with_a_warning(
    wcep10_dir, caplog):
  path = str(wcep10_dir / 'test.jsonl')
  with open(path, 'w') as f:
    f.write('\n'.join([
        GOOD, '', json.dumps({'document': ['', ' '], 'summary': 'x'}),
        json.dumps({'document': 'Second.', 'summary': 'Two.'}), '']) + '\n')
  with caplog.at_level(logging.WARNING):
    check = summary_jsonl.check_file(path)
  assert (check.examples, check.blank_lines, check.empty_records,
          check.first_empty_record_line) == (2, 2, 1, 3)
  assert 'skipped 1 of 3 records whose document or summary is empty (the ' \
         'first at line 3)' in caplog.text
  examples = task_data.examples('wcep10', {'inputs': 64, 'targets': 16},
                                    'test')
  assert [e['targets_pretokenized'].decode() for e in examples] == [
      'Its summary.', 'Two.']


@pytest.fixture
def tfds_data_dir(tmp_path, monkeypatch, use_sentencepiece_model):
  """An empty TFDS data dir, as if TFDS_DATA_DIR named it."""
  del use_sentencepiece_model
  data_dir = tmp_path / 'tensorflow_datasets'
  data_dir.mkdir()
  monkeypatch.setenv('TFDS_DATA_DIR', str(data_dir))
  monkeypatch.setattr(tfds_constants, 'DATA_DIR', str(data_dir))
  # seqio keeps one TFDS builder per dataset for the process's lifetime.
  monkeypatch.setattr(seqio.utils.LazyTfdsLoader, '_MEMOIZED_BUILDERS', {})
  return data_dir


@pytest.mark.parametrize('task, tfds_name', [
    ('multi_news', 'multi_news:2.1.0'),
    ('pubmed', 'scientific_papers/pubmed:1.1.1')])
def test_tfds_data_not_prepared_names_the_dir_and_the_command(
    tmp_path, tfds_data_dir, task, tfds_name):
  directory = tfds_name.replace(':', '/')
  with pytest.raises(DataError, match=(
      f'{tfds_data_dir}/{directory}: {tfds_name} is not prepared in any TFDS '
      f'data dir searched \\({tfds_data_dir}\\)\\. Fix: prepare it with '
      f'`tfds build {tfds_name} --data_dir={tfds_data_dir}`, or set '
      'TFDS_DATA_DIR')):
    _train(tmp_path / 'run', task)
  _assert_nothing_written(tmp_path / 'run')


def test_tfds_split_not_prepared_lists_the_prepared_ones(tmp_path,
                                                         tfds_data_dir):
  task_data.write_split_metadata('multi_news:2.1.0', 4, str(tfds_data_dir),
                                     splits=('train', 'test'))
  with pytest.raises(DataError, match=(
      r"multi_news:2\.1\.0 is prepared with the splits \['test', 'train'\] but "
      r"not 'validation'\. Fix: prepare it with "
      r'`tfds build multi_news:2\.1\.0')):
    _train(tmp_path / 'run', 'multi_news', split='validation')
  _assert_nothing_written(tmp_path / 'run')


@pytest.fixture
def enwik8_file(tmp_path, monkeypatch):
  path = tmp_path / 'enwik8'
  monkeypatch.setenv('FOVEA_ENWIK8_FILE', str(path))
  return path


def test_enwik8_too_short_for_its_splits(tmp_path, enwik8_file):
  enwik8_file.write_bytes(b'0123456789')
  with pytest.raises(DataError, match=(
      r"enwik8: the validation split \(bytes 9 to 9 of the file's 10\) is "
      r'empty\. Fix: give a file of at least 11 bytes')):
    _train(tmp_path / 'run', 'enwik8', {'targets': 32}, split='validation',
           model_gin=LM_MODEL_GIN)
  _assert_nothing_written(tmp_path / 'run')
  enwik8_file.unlink()
  with pytest.raises(DataError,
                     match=r'enwik8: the enwik8 file does not exist'):
    _train(tmp_path / 'run', 'enwik8', {'targets': 32}, model_gin=LM_MODEL_GIN)


def test_enwik8_reads_empty_and_long_lines_in_bounded_blocks(enwik8_file,
                                                             monkeypatch):
  # Bytes, not lines: an empty line is two newline bytes, a line longer than
  # a block is cut across blocks, and no read exceeds ENWIK8_BLOCK_BYTES.
  monkeypatch.setattr(file_tasks, 'ENWIK8_BLOCK_BYTES', 1000)
  raw = b'<page>\n\n\n' + b'x' * 3500 + b'\n\n\xff\xfe not UTF-8\n' * 3
  enwik8_file.write_bytes(raw)
  start, end = file_tasks.enwik8_byte_range('train', len(raw))
  blocks = [b['text'] for b in file_tasks.enwik8_dataset('train')
            .as_numpy_iterator()]
  assert max(len(b) for b in blocks) == 1000
  assert b''.join(blocks) == raw[start:end]
  chunks = task_data.examples('enwik8', {'targets': 256}, 'train')
  tokens = np.concatenate([c['targets'] for c in chunks]) - 3  # Byte ids.
  assert tokens.astype(np.uint8).tobytes() == raw[start:end]


def test_an_empty_dataset_of_any_task_is_named_at_the_first_batch():
  # Sources outside fovea_jax.tasks have no check of their own; the iterator
  # names the task instead of ending the run in a StopIteration.
  def no_texts(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_tensor_slices(
        {'text': tf.constant([], tf.string)})

  registration.add_language_model_task(
      'empty_test_task',
      source=seqio.FunctionDataSource(no_texts, splits=('train',)),
      vocabulary=vocabularies.BYTE_VOCABULARY, text_key='text')
  try:
    cfg = data.DatasetConfig('empty_test_task', {'targets': 16}, 'train',
                             batch_size=2, shuffle=False, seed=0)
    batches = data.DataIterator(cfg)
    with pytest.raises(DataError, match=(
        r"task 'empty_test_task', split 'train': no examples \(read as shard "
        r'1 of 1\)\. Fix: give the split at least one example per data shard')):
      next(batches)
  finally:
    seqio.TaskRegistry.remove('empty_test_task')


@pytest.mark.slow
def test_command_line_prints_one_line_and_no_traceback(tmp_path, wcep10_dir,
                                                       sentencepiece_model):
  (wcep10_dir / 'train.jsonl').write_bytes(b'')
  model_dir = tmp_path / 'run'
  process = subprocess.run(
      [sys.executable, '-m', 'fovea_jax.train',
       f'--gin_file={gin_runs.STANDIN_MODEL_GIN}',
       '--gin_file=runs/pretrain.gin',
       "--gin.MIXTURE_OR_TASK_NAME='wcep10'",
       f'--gin.TASK_FEATURE_LENGTHS={gin_runs.LENGTHS}',
       '--gin.TRAIN_STEPS=1', '--gin.BATCH_SIZE=2',
       f"--gin.MODEL_DIR='{model_dir}'"],
      cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=REPO,
               FOVEA_SENTENCEPIECE_MODEL=sentencepiece_model))
  assert process.returncode == 1
  lines = process.stderr.strip().splitlines()
  assert lines[-1] == (
      f'fovea_jax.train: data error: {wcep10_dir}/train.jsonl: the file is '
      'empty. Fix: write one JSON object per line, e.g. {"document": "...", '
      '"summary": "..."}, with a non-empty document and summary.')
  assert 'Traceback' not in process.stderr
  assert not [line for line in lines if 'File "' in line or
              'tensorflow/' in line or 'tensorflow_datasets/' in line]
  _assert_nothing_written(model_dir)

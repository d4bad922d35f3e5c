"""TFDS tasks through their real loaders on mock data; WCEP-10 and enwik8 files.

`tfds.testing.mock_data` replaces only the stored records (random text with
the datasets' real feature names); seqio's TfdsDataSource, our preprocessors
and the SentencePiece vocabulary run as they would on the real data.
"""
import contextlib
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from fovea_jax import data
from fovea_jax.data.errors import DataError
from fovea_jax.tasks import file_tasks
from fovea_jax.tasks import tfds_tasks
from fovea_jax.tasks import vocabularies
from fovea_jax.tensorflow_runtime import seqio
from fovea_jax.tensorflow_runtime import tf
from tests.data import task_data


@pytest.fixture
def mock_tfds(tmp_path):
  """`tfds.testing.mock_data` over a data dir holding each split's metadata.

  TFDS ships no metadata for these datasets, and seqio reads a split's size and
  file list (for in-memory caching and sharding) as real prepared data would
  record them, so the fixture writes that metadata; the records are mocked.
  """

  @contextlib.contextmanager
  def mock(num_examples):
    data_dir = str(tmp_path / f'tfds_{num_examples}')
    tfds_names = [name for name, *_ in (
        *tfds_tasks.SUMMARIZATION_DATASETS.values(),
        *tfds_tasks.LANGUAGE_MODEL_DATASETS.values())]
    for tfds_name in tfds_names:
      task_data.write_split_metadata(tfds_name, num_examples, data_dir)
    with tfds.testing.mock_data(num_examples=num_examples, data_dir=data_dir):
      yield

  return mock


@pytest.mark.parametrize('task', ['multi_news', 'pubmed', 'arxiv'])
def test_tfds_summarization_tasks(mock_tfds, task, use_sentencepiece_model):
  del use_sentencepiece_model
  vocab = seqio.get_mixture_or_task(task).output_features['targets'].vocabulary
  with mock_tfds(4):
    examples = task_data.examples(task, {'inputs': 64, 'targets': 16},
                                  'validation')
  assert len(examples) == 4
  for example in examples:
    assert 0 < len(example['inputs']) <= 64 and example['inputs'][-1] == 1
    assert 0 < len(example['targets']) <= 16 and example['targets'][-1] == 1
    assert example['inputs'].max() < vocab.vocab_size
    # Untruncated text round-trips through the SentencePiece vocabulary.
    if len(example['targets']) < 16:
      assert vocab.decode(example['targets'].tolist()) == (
          example['targets_pretokenized'].decode())


def test_pg19_chunks_books_into_target_lengths(mock_tfds,
                                               use_sentencepiece_model):
  del use_sentencepiece_model
  with mock_tfds(2):
    books = list(tfds.load('pg19', split='test').as_numpy_iterator())
    chunks = task_data.examples('pg19', {'targets': 8}, 'test')
  vocab = seqio.get_mixture_or_task('pg19').output_features['targets'].vocabulary
  assert all(0 < len(c['targets']) <= 8 for c in chunks)
  tokens = np.concatenate([c['targets'] for c in chunks]).tolist()
  whole = sum((vocab.encode(b['book_text'].decode()) for b in books), [])
  assert tokens == whole


def test_tfds_task_batches_through_the_pipeline(mock_tfds,
                                                use_sentencepiece_model):
  del use_sentencepiece_model
  cfg = data.DatasetConfig('multi_news', {'inputs': 32, 'targets': 8}, 'train',
                           batch_size=2, shuffle=True, seed=1, pack=True,
                           module='fovea_jax.tasks')
  with mock_tfds(6):
    batch = next(data.DataIterator(cfg))
  assert batch['encoder_input_tokens'].shape == (2, 32)
  assert batch['encoder_segment_ids'].max() >= 1


def test_configured_vocabularies_compare_equal_loaded_or_not(
    use_sentencepiece_model):
  task_vocab = seqio.get_mixture_or_task('wcep10').output_features[
      'inputs'].vocabulary
  model_vocab = vocabularies.ConfiguredSentencePieceVocabulary()
  assert task_vocab.vocab_size == 512  # Loads this one only.
  assert model_vocab == task_vocab
  assert model_vocab == seqio.SentencePieceVocabulary(use_sentencepiece_model)
  assert model_vocab != vocabularies.ConfiguredSentencePieceVocabulary(
      extra_ids=100)
  assert model_vocab != seqio.ByteVocabulary()


def test_missing_sentencepiece_path_says_how_to_set_it(mock_tfds, monkeypatch):
  monkeypatch.delenv('FOVEA_SENTENCEPIECE_MODEL', raising=False)
  cfg = data.DatasetConfig('pubmed', {'inputs': 8, 'targets': 8}, 'test',
                           batch_size=1, shuffle=False, seed=0)
  with mock_tfds(1):
    with pytest.raises(ValueError, match='FOVEA_SENTENCEPIECE_MODEL'):
      data.get_dataset(cfg)


def test_wcep10_reads_jsonl_files(tmp_path, monkeypatch,
                                  use_sentencepiece_model):
  del use_sentencepiece_model
  records = [
      {'document': ['First article text.', 'Second article.'],
       'summary': 'A short summary.'},
      {'document': 'One document only.', 'summary': 'Another summary.'},
  ]
  for split in file_tasks.SPLITS:
    (tmp_path / f'{split}.jsonl').write_text(
        '\n'.join(json.dumps(r) for r in records) + '\n')
  monkeypatch.setenv('FOVEA_WCEP10_DIR', str(tmp_path))
  examples = task_data.examples('wcep10', {'inputs': 256, 'targets': 64},
                                'test')
  assert [e['inputs_pretokenized'].decode() for e in examples] == [
      'First article text.\n\nSecond article.', 'One document only.']
  assert [e['targets_pretokenized'].decode() for e in examples] == [
      'A short summary.', 'Another summary.']
  assert all(e['targets'][-1] == 1 for e in examples)

  (tmp_path / 'train.jsonl').write_text('{"document": "no summary"}\n')
  # The whole file is checked when the dataset is built, before tf.data runs.
  with pytest.raises(DataError, match='train.jsonl:1'):
    task_data.examples('wcep10', {'inputs': 256, 'targets': 64}, 'train')


def test_enwik8_splits_cover_the_file_byte_for_byte(tmp_path, monkeypatch):
  rng = np.random.default_rng(0)
  text = ''.join(rng.choice(list('<page>abc é ü 日本\n'), size=20_000))
  raw = text.encode('utf-8')
  path = tmp_path / 'enwik8'
  path.write_bytes(raw)
  monkeypatch.setenv('FOVEA_ENWIK8_FILE', str(path))
  monkeypatch.setattr(file_tasks, 'ENWIK8_BLOCK_BYTES', 4096)
  vocab = seqio.ByteVocabulary()
  recovered = b''
  for split in file_tasks.SPLITS:
    chunks = task_data.examples('enwik8', {'targets': 1000}, split)
    assert all(0 < len(c['targets']) <= 1000 for c in chunks)
    # Byte ids are raw bytes + 3 (after pad, EOS, UNK), even mid-character.
    recovered += (np.concatenate([c['targets'] for c in chunks]) - 3).astype(
        np.uint8).tobytes()
    start, end = file_tasks.enwik8_byte_range(split, len(raw))
    assert len(recovered) == end
  assert recovered == raw
  assert file_tasks.enwik8_byte_range('validation', 100_000_000) == (
      90_000_000, 95_000_000)
  assert vocab.eos_id == 1

"""The SentencePiece tool trains a usable vocabulary from a task's own text."""
import importlib

import pytest

from fovea_jax.tasks import stdlib_sources
from fovea_jax.tensorflow_runtime import seqio

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

train_sentencepiece = importlib.import_module('tools.train_sentencepiece')


def test_trained_vocabulary_follows_t5_ids_and_round_trips(sentencepiece_model):
  vocab = seqio.SentencePieceVocabulary(sentencepiece_model)
  assert vocab.vocab_size == 512
  assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
  # Text it was not trained on (a validation module) still round-trips, with
  # fewer pieces than bytes because pieces were learnt from Python sources.
  text = stdlib_sources.modules_by_split()['validation'][0].source[:2000]
  ids = vocab.encode(text)
  assert vocab.decode(ids) == text
  assert len(ids) < 0.7 * len(text.encode('utf-8'))


def test_text_comes_from_the_tasks_features_before_tokenization():
  lines = list(train_sentencepiece.task_text_lines(
      'stdlib_summarization', features=['targets'], max_examples=3))
  summaries = [m.docstring_summary
               for m in stdlib_sources.modules_by_split()['train'][:3]]
  assert lines == summaries
  with pytest.raises(ValueError, match='must exceed 259'):
    train_sentencepiece.train('stdlib_summarization', '/unused', 200)
  with pytest.raises(ValueError, match="no text features \\['summary'\\]"):
    list(train_sentencepiece.task_text_lines('stdlib_summarization',
                                             features=['summary']))


@pytest.mark.slow
def test_whitespace_pieces_hold_indentation(sentencepiece_model, tmp_path):
  code_model = train_sentencepiece.train(
      'stdlib_summarization', str(tmp_path / 'code'), 512, max_examples=10,
      whitespace_pieces=True)
  default, code = (seqio.SentencePieceVocabulary(m)
                   for m in (sentencepiece_model, code_model))
  pieces = [code.tokenizer.id_to_piece(i) for i in range(code.vocab_size)]
  assert '\u2581' * 4 in pieces  # Four spaces of indentation, one piece.
  text = stdlib_sources.modules_by_split()['validation'][1].source[:3000]
  assert code.decode(code.encode(text)) == text
  assert len(code.encode(text)) < 0.9 * len(default.encode(text))

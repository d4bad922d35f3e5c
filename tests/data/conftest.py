"""Fixtures for the data tests: the registered tasks and a tiny vocabulary."""
import importlib

import pytest

import fovea_jax.tasks  # noqa: F401  (registers the tasks)


@pytest.fixture(scope='session')
def sentencepiece_model(tmp_path_factory):
  """A 512-piece SentencePiece model trained by our tool on 10 stdlib modules."""
  tool = importlib.import_module('tools.train_sentencepiece')
  prefix = tmp_path_factory.mktemp('spm') / 'stdlib_512'
  return tool.train('stdlib_summarization', str(prefix), 512, max_examples=10)


@pytest.fixture
def use_sentencepiece_model(sentencepiece_model, monkeypatch):
  monkeypatch.setenv('FOVEA_SENTENCEPIECE_MODEL', sentencepiece_model)
  return sentencepiece_model

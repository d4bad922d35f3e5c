"""Fixtures for the data tests: the registered tasks and a tiny vocabulary."""
import importlib

import pytest

import fovea_jax.tasks  # noqa: F401  (registers the tasks)


@pytest.fixture(scope='session')
def sentencepiece_model(tmp_path_factory):
  """A 300-piece SentencePiece model trained by our tool on stdlib text."""
  tool = importlib.import_module('tools.train_sentencepiece')
  prefix = tmp_path_factory.mktemp('spm') / 'stdlib_300'
  return tool.train('stdlib_summarization', str(prefix), 300, max_examples=40)


@pytest.fixture
def use_sentencepiece_model(sentencepiece_model, monkeypatch):
  monkeypatch.setenv('FOVEA_SENTENCEPIECE_MODEL', sentencepiece_model)
  return sentencepiece_model

"""A second identical run loads its compiled programs from the persistent
compilation cache the run files configure, and says so in its log."""
import logging

import pytest

from . import gin_runs

pytestmark = pytest.mark.slow  # trains

HIT = 'Compilation cache hit'


def _train(model_dir, cache_dir):
  return gin_runs.run('train', 'runs/pretrain.gin', gin_runs.train_bindings(
      model_dir, 2, COMPILATION_CACHE_DIR=f"'{cache_dir}'",
      **{'compilation_cache.configure.min_compile_seconds': 0}))


def test_second_identical_run_hits_the_cache(tmp_path, caplog):
  cache_dir = tmp_path / 'cache'
  with caplog.at_level(logging.INFO):
    _train(tmp_path / 'first', cache_dir)
  assert f'Compilation cache: {cache_dir}' in caplog.text
  assert HIT not in caplog.text
  assert any(cache_dir.iterdir())  # the run wrote its programs
  caplog.clear()
  with caplog.at_level(logging.INFO):
    _train(tmp_path / 'second', cache_dir)
  assert HIT in caplog.text and str(cache_dir) in caplog.text


def test_the_cache_is_off_with_none(tmp_path, caplog):
  with caplog.at_level(logging.INFO):
    gin_runs.run('train', 'runs/pretrain.gin', gin_runs.train_bindings(
        tmp_path / 'run', 1, COMPILATION_CACHE_DIR='None'))
  assert 'Compilation cache' not in caplog.text

"""A study row run in its own process gets the runner's config and overrides."""
import pytest

from experiments import study_config


def test_row_processes_get_the_config_and_its_overrides():
  argv = ['run_study', '--config', 'experiments/lm_study.py:quick',
          '--config.train_steps=7', '--config.batch_size', '2', '--fresh',
          '--output_dir=/tmp/x']
  assert study_config.row_process_flags(argv) == [
      '--config=experiments/lm_study.py:quick', '--config.train_steps=7',
      '--config.batch_size=2']


def test_a_missing_config_is_named():
  with pytest.raises(ValueError, match='--config is required'):
    study_config.row_process_flags(['run_study', '--fresh'])

"""The T5X-style gin vocabulary reaches DatasetConfig and the data paths."""
import gin
import pytest

from fovea_jax import data
from fovea_jax.tasks import paths

_RUN_GIN = """
from __gin__ import dynamic_registration
from fovea_jax.data import config
from fovea_jax.tasks import paths

MIXTURE_OR_TASK_NAME = 'stdlib_summarization'
TASK_FEATURE_LENGTHS = {'inputs': 256, 'targets': 32}
BATCH_SIZE = 4
USE_CACHED_TASKS = False
SENTENCEPIECE_MODEL = '/models/spm/multi_news_32k.model'

train/config.DatasetConfig:
  mixture_or_task_name = %MIXTURE_OR_TASK_NAME
  task_feature_lengths = %TASK_FEATURE_LENGTHS
  split = 'train'
  batch_size = %BATCH_SIZE
  shuffle = True
  seed = None
  use_cached = %USE_CACHED_TASKS
  pack = True
  module = 'fovea_jax.tasks'

paths.sentencepiece_model_path.path = %SENTENCEPIECE_MODEL
"""


@pytest.fixture
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_run_file_bindings_build_the_config_and_paths(clean_gin):
  del clean_gin
  gin.parse_config(_RUN_GIN)
  with gin.config_scope('train'):
    cfg = data.DatasetConfig()
  assert cfg.mixture_or_task_name == 'stdlib_summarization'
  assert dict(cfg.task_feature_lengths) == {'inputs': 256, 'targets': 32}
  assert (cfg.batch_size, cfg.pack, cfg.seed) == (4, True, None)
  assert paths.sentencepiece_model_path() == '/models/spm/multi_news_32k.model'


def test_bad_lengths_from_gin_fail_when_the_config_is_built(clean_gin):
  del clean_gin
  gin.parse_config(_RUN_GIN.replace("'targets': 32", "'targets': -32"))
  with gin.config_scope('train'):
    with pytest.raises(ValueError, match="TASK_FEATURE_LENGTHS\\['targets'\\]"):
      data.DatasetConfig()


@pytest.mark.parametrize('name,listed', [
    ('stdlib_sumarization', 'Close matches: stdlib_summarization'),
    ('zzz', 'Registered: .*stdlib_lm.*stdlib_summarization'),
])
def test_unknown_task_names_the_registered_ones(name, listed):
  with pytest.raises(ValueError, match=f"No seqio task or mixture named '{name}'"
                     f'.*{listed}'):
    data.get_mixture_or_task(name, module='fovea_jax.tasks')

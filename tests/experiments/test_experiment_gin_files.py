"""Every gin file under experiments/ parses and builds its model (jax.eval_shape).

Paper runs (experiments/<paper>/*.gin that include a run file) are parsed alone,
as `python -m fovea_jax.train --gin_file=...` would, with only the paths a user
must give bound here; study files are parsed as the study's rows use them. The
model's parameters are built abstractly at the run's own input lengths, so a
16k-token fovea encoder or a 1.3B MASFormer costs no memory.
"""
import dataclasses
import os
import pathlib

import gin
import jax
import numpy as np
import pytest

from experiments import diagnostic_study
from experiments import lm_study
from experiments import summarization_study
from fovea_jax.runs import entry_points
from fovea_jax.runs import gin_utils
from fovea_jax.training import model_inputs

REPO = pathlib.Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / 'experiments'
# Paths a user passes on the command line (never read: eval_shape only).
MODEL_DIR = "MODEL_DIR = '/tmp/unused_model_dir'"
WARM_START = "INITIAL_CHECKPOINT_PATH = '/tmp/unused_checkpoint'"
STUDY_DIRS = ('gin',)


def _relative(path: pathlib.Path) -> str:
  return str(path.relative_to(REPO))


def paper_run_files():
  return sorted(p for p in EXPERIMENTS.glob('*/*.gin')
                if p.parent.name not in STUDY_DIRS and
                not p.name.startswith('data_') and p.name != 'recipe.gin')


STUDIES = (diagnostic_study, lm_study, summarization_study)


def study_rows():
  """One row per (study, attention file, bindings): seeds build one model."""
  rows, seen = [], set()
  for module in STUDIES:
    config = module.get_config('full')
    for row in config.rows:
      key = (config.study, row['attention'], tuple(row['bindings']))
      if key in seen:
        continue
      seen.add(key)
      rows.append(pytest.param(config, row,
                               id=f'{config.study}-{row["name"]}'))
  return rows


def _warm_starts(path: pathlib.Path) -> bool:
  """Whether the run (or a file it includes from experiments/) fine-tunes."""
  text = path.read_text()
  included = [REPO / line.split("'")[1] for line in text.splitlines()
              if line.startswith("include 'experiments/")]
  return 'runs/finetune.gin' in text or any(map(_warm_starts, included))


def _abstract_params(files, bindings=()):
  entry_points._register_configurables()  # pylint: disable=protected-access
  user = [MODEL_DIR]
  if any(_warm_starts(REPO / f) for f in files if (REPO / f).exists()):
    user.append(WARM_START)
  gin_utils.parse_gin(files, [*user, *bindings], [str(REPO)])
  model = gin.query_parameter('%MODEL').scoped_configurable_fn()
  dataset_cfg = gin.query_parameter(
      'train_lib.train.train_dataset_cfg').scoped_configurable_fn()
  dataset_cfg = dataclasses.replace(dataset_cfg, batch_size=1)
  shapes, types = model_inputs.input_shapes_and_types(model, dataset_cfg)
  variables = jax.eval_shape(lambda: model.get_initial_variables(
      jax.random.PRNGKey(0), shapes, types))
  return model, dataset_cfg, variables['params']


def _num_params(params) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


@pytest.mark.slow
@pytest.mark.parametrize('path', paper_run_files(), ids=_relative)
def test_paper_run_builds(path):
  model, dataset_cfg, params = _abstract_params([_relative(path)])
  lengths = dict(dataset_cfg.task_feature_lengths)
  paper = path.parent.name
  if paper in ('fovea', 'longt5'):
    assert lengths == {'inputs': 16384, 'targets': 256}
    assert gin.query_parameter('%BATCH_SIZE') == 128
    assert gin.query_parameter('%BEAM_SIZE') == 3
    # LongT5-base: 12 + 12 layers, 768 wide.
    assert model.module.config.num_encoder_layers == 12
    assert model.module.config.emb_dim == 768
  elif paper == 'fma':
    assert lengths == {'targets': 4096}
    assert dataset_cfg.mixture_or_task_name == 'enwik8'
  elif paper == 'masformer':
    assert lengths['targets'] in (2048, 8192)
    assert 1.2e9 < _num_params(params) < 1.4e9, _num_params(params)
  else:
    raise AssertionError(f'{path}: no expectations for paper folder {paper!r}; '
                         'add them here and a row to experiments/README.md.')


@pytest.mark.slow
def test_paper_schemes_are_the_papers():
  """The scheme each paper file builds, read back from the network config."""
  expected = {
      'fovea/multi_news.gin': ('fovea', dict(block_len=128, wing=1)),
      'longt5/tglobal_pubmed.gin': ('longt5_tglobal', {}),
      'longt5/local_wcep10.gin': ('local', dict(window=127)),
      'fma/fma_learned.gin': ('fma', dict(rank=4, downsample='grouped_conv')),
      'fma/fma_avg.gin': ('fma', dict(rank=4, downsample='avg')),
      'fma/sliding.gin': ('local', dict(window=127)),
      'masformer/continual_l8_sliding.gin': ('masformer', dict(num_full=8)),
      'masformer/continual_l4_block.gin': ('masformer',
                                           dict(num_full=4, local='block')),
  }
  for name, (scheme, options) in expected.items():
    model, _, _ = _abstract_params([f'experiments/{name}'])
    spec = model.module.config.attention
    assert spec.scheme_name == scheme, name
    for option, value in options.items():
      assert getattr(spec, option) == value, (name, option)


@pytest.mark.parametrize('config,row', study_rows())
def test_study_row_builds(config, row):
  _, dataset_cfg, params = _abstract_params(
      [config.model_gin, row['attention'], 'runs/pretrain.gin'],
      [f'TASK_FEATURE_LENGTHS = {dict(config.feature_lengths)!r}',
       f'MIXTURE_OR_TASK_NAME = {config.task!r}', 'TRAIN_STEPS = 1',
       *config.model_bindings, *row['bindings']])
  assert dict(dataset_cfg.task_feature_lengths) == dict(config.feature_lengths)
  assert _num_params(params) > 0


def test_every_experiments_gin_file_is_covered():
  """A gin file here is a paper run, included by one, or used by a study."""
  covered = {str(p) for p in paper_run_files()}
  for path in paper_run_files():
    for line in path.read_text().splitlines():
      if line.startswith("include 'experiments/"):
        covered.add(str(REPO / line.split("'")[1]))
  for module in STUDIES:
    config = module.get_config('full')
    covered.add(str(REPO / config.model_gin))
    covered.update(str(REPO / r['attention']) for r in config.rows)
  covered.add(str(EXPERIMENTS / 'gin' / 'evaluate_by_position.gin'))
  every = {str(p) for p in EXPERIMENTS.rglob('*.gin')}
  assert every - covered == set(), 'gin files no test parses'
  assert os.path.exists(EXPERIMENTS / 'README.md')

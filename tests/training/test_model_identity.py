"""Runs know their model: a tiny fovea run's checkpoint carries its fingerprint
and gin config; eval, infer and export built with another attention file fail
naming `attention`; with the right files they run; the Hugging Face export of
fovea is refused, naming the scheme."""
import json
import os

import pytest

from fovea_jax.training import checkpoints
from fovea_jax.training import fingerprint
from . import gin_runs

pytestmark = pytest.mark.slow

FOVEA = ['sizes/tiny.gin', 'attention/fovea.gin']
DENSE = ['sizes/tiny.gin', 'attention/dense.gin']
LENGTHS = {'inputs': 256, 'targets': 16}
SMALL = ['DROPOUT_RATE = 0.0', 'BEAM_SIZE = 1',
         f'TASK_FEATURE_LENGTHS = {LENGTHS}']


@pytest.fixture(scope='module')
def fovea_run(tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp('fovea') / 'run')
  gin_runs.run('train', 'runs/pretrain.gin',
               gin_runs.train_bindings(model_dir, 1) + SMALL, model_gin=FOVEA)
  return model_dir


def test_checkpoint_carries_fingerprint_and_gin_config(fovea_run):
  meta = checkpoints.read_meta(fovea_run, 1)
  assert meta['model']['architecture'] == 'EncoderDecoder'
  assert meta['model']['config.attention'] == 'fovea'
  assert meta['model']['config.num_heads'] == 4
  assert 'dropout_rate' not in ' '.join(meta['model'])  # Compute-only.
  assert 'fovea.Fovea' in meta['gin_config']
  assert meta['optimizer']['name'] == 'adafactor'


@pytest.mark.parametrize('name,run_file,output_macro', [
    ('evaluate', 'runs/eval.gin', 'EVAL_OUTPUT_DIR'),
    ('infer', 'runs/infer.gin', 'INFER_OUTPUT_DIR'),
    ('export', 'runs/export.gin', 'EXPORT_OUTPUT_DIR')])
def test_another_attention_file_is_an_error_naming_attention(
    fovea_run, tmp_path, name, run_file, output_macro):
  bindings = gin_runs.checkpoint_bindings(
      fovea_run, output_macro, tmp_path / 'out',
      dataset=name != 'export') + SMALL
  with pytest.raises(fingerprint.ModelMismatchError,
                     match=r"config.attention: checkpoint 'fovea', this model "
                     r"'dense'.*allow_model_mismatch"):
    gin_runs.run(name, run_file, bindings, model_gin=DENSE)
  assert not os.path.exists(tmp_path / 'out' / 'results.json')


def test_right_files_infer_and_huggingface_export_of_fovea_is_refused(
    fovea_run, tmp_path):
  path = gin_runs.run(
      'infer', 'runs/infer.gin', gin_runs.checkpoint_bindings(
          fovea_run, 'INFER_OUTPUT_DIR', tmp_path / 'infer') + SMALL + [
              'NUM_EXAMPLES = 2'], model_gin=FOVEA)
  rows = [json.loads(line) for line in open(path)]
  assert len(rows) == 2 and all(r['input'] and r['target'] for r in rows)
  with pytest.raises(ValueError, match="Hugging Face export refused: "
                     "transformers cannot compute the 'fovea' attention"):
    gin_runs.run('export', 'runs/export.gin', gin_runs.checkpoint_bindings(
        fovea_run, 'EXPORT_OUTPUT_DIR', tmp_path / 'export', dataset=False)
                 + SMALL + [
            'export.huggingface = True'], model_gin=FOVEA)
  assert not os.path.exists(tmp_path / 'export' / 'huggingface')

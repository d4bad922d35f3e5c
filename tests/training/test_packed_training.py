"""Packed examples from the command line: a decoder-only LM of every scheme
that packs trains on `stdlib_lm` with the pretrain run file as shipped (it
packs); a scheme that cannot pack says so, naming the option."""
import math

import pytest

from . import gin_runs

pytestmark = pytest.mark.slow

PACKING_SCHEMES = ('dense', 'fovea', 'fma', 'fma_learned', 'longt5_local',
                   'longt5_tglobal', 'masformer')


# The tiny size has two layers: MASFormer's one dense layer, then a local one.
OPTIONS = {'masformer': ['masformer.MASFormer.num_full = 1'],
           'fma_learned': ["fma.Fma.downsample = 'grouped_conv'",
                           'fma.Fma.max_length = 256']}


def _train(scheme, model_dir):
  gin_file = 'attention/fma.gin' if scheme == 'fma_learned' else (
      f'attention/{scheme}.gin')
  return gin_runs.run('train', 'runs/pretrain.gin', OPTIONS.get(scheme, []) + [
      "MIXTURE_OR_TASK_NAME = 'stdlib_lm'",
      "TASK_FEATURE_LENGTHS = {'targets': 256}", 'TRAIN_STEPS = 1',
      f"MODEL_DIR = '{model_dir}'", 'BATCH_SIZE = 8',
      'CHECKPOINT_PERIOD = 1', 'train_lib.train.show_progress = False'],
                      model_gin=['sizes/decoder_only_tiny.gin', gin_file])


@pytest.mark.parametrize('scheme', PACKING_SCHEMES)
def test_packed_lm_trains_from_the_pretrain_run_file(scheme, tmp_path):
  result = _train(scheme, tmp_path)
  assert 'PACKING = True' in (tmp_path / 'operative_config.gin').read_text()
  assert int(result.state.step) == 1
  assert math.isfinite(float(result.last_metrics['loss']))


def test_a_scheme_that_cannot_pack_says_so(tmp_path):
  with pytest.raises(ValueError, match=r'with packed examples \(PACKING = True\).*'
                     "'h_transformer' does not support packed examples"
                     r'(.|\n)*--gin\.PACKING=False'):
    _train('h_transformer', tmp_path)

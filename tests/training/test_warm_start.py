"""Warm start from a Hugging Face LongT5 directory (one flag away from a fovea
encoder), and the HF export refusing fovea."""
import os

import gin
import jax
import numpy as np
import pytest

from fovea_jax.interop import hf_longt5
from fovea_jax.runs import entry_points
from fovea_jax.runs import export_lib
from fovea_jax.runs import gin_utils
from fovea_jax.training import fingerprint
from . import gin_runs

pytestmark = pytest.mark.slow

TINY_FOVEA = ('sizes/tiny.gin', 'attention/fovea.gin')
LENGTHS = {'inputs': 256, 'targets': 16}


def tiny_fovea_model():
  entry_points._register_configurables()  # pylint: disable=protected-access
  gin_utils.parse_gin(list(TINY_FOVEA), [])
  return gin.query_parameter('%MODEL').scoped_configurable_fn()


def test_finetune_from_huggingface_dir_then_export_the_same_layout(tmp_path):
  model = tiny_fovea_model()
  shapes = {'encoder_input_tokens': (2, 256), 'decoder_input_tokens': (2, 16)}
  source = jax.device_get(model.get_initial_variables(
      jax.random.PRNGKey(7), shapes, {k: np.int32 for k in shapes})['params'])
  hf_dir = str(tmp_path / 'hf_longt5')
  hf_longt5.save_hf_checkpoint(source, model.module.config, hf_dir)

  model_dir = tmp_path / 'finetune'
  bindings = gin_runs.train_bindings(model_dir, 0) + [
      f'TASK_FEATURE_LENGTHS = {LENGTHS}', f"INITIAL_CHECKPOINT_PATH = '{hf_dir}'"]
  # LongT5 (local) weights into a fovea encoder: refused, naming the field...
  with pytest.raises(fingerprint.ModelMismatchError,
                     match=r"config.attention: checkpoint 'local', this "
                     r"model 'fovea'.*allow_model_mismatch = True"):
    gin_runs.run('train', 'runs/finetune.gin', bindings, model_gin=TINY_FOVEA)
  # ... and one flag away.
  result = gin_runs.run(
      'train', 'runs/finetune.gin',
      bindings + ['RestoreCheckpointConfig.allow_model_mismatch = True'],
      model_gin=TINY_FOVEA)
  assert os.path.isdir(model_dir / 'warm_start' / 'checkpoint_0')
  flat_source = export_lib.flatten_params(source)
  flat_started = export_lib.flatten_params(jax.device_get(result.state.params))
  assert flat_source.keys() == flat_started.keys()
  for name, value in flat_source.items():
    np.testing.assert_array_equal(flat_started[name], value, err_msg=name)

  # transformers would compute local attention with these weights: refused.
  with pytest.raises(ValueError, match="cannot compute the 'fovea' attention"):
    export_lib.save_huggingface(model, jax.device_get(result.state.params),
                                str(tmp_path / 'export'))
  assert not os.path.exists(tmp_path / 'export')

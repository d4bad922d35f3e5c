"""fovea_jax/t5x_compat/gin/*.gin parse and bind, without T5X, against
stand-ins with T5X's signatures (t5x_standins.py): every name they import from
fovea_jax exists, every macro they use is defined by our size and architecture
files, and the values reach T5X's objects. Running T5X itself is
test_t5x_compat.py's (skipped where T5X is not installed)."""
import contextlib
import pathlib
import sys

import gin
import pytest

from fovea_jax import networks
from fovea_jax.sharding import axis_names as ax
from fovea_jax.tensorflow_runtime import seqio  # before gin's `import seqio`
import t5x_standins

REPO = pathlib.Path(__file__).parents[2]
GIN_DIR = REPO / 'fovea_jax' / 't5x_compat' / 'gin'
SEARCH_PATHS = (REPO / 'gin_configs', GIN_DIR)


@pytest.fixture
def standin_t5x(monkeypatch):
  """The stand-ins as `t5x`, and fovea_jax.t5x_compat.models built on them."""
  for name, module in t5x_standins.modules().items():
    monkeypatch.setitem(sys.modules, name, module)
  monkeypatch.delitem(sys.modules, 'fovea_jax.t5x_compat.models', raising=False)
  yield sys.modules['t5x']
  sys.modules.pop('fovea_jax.t5x_compat.models', None)


@contextlib.contextmanager
def _parsed(files, bindings=()):
  gin.clear_config()
  for path in SEARCH_PATHS:
    gin.add_config_file_search_path(str(path))
  try:
    gin.parse_config_files_and_bindings(files, list(bindings),
                                        skip_unknown=False)
    yield
  finally:
    gin.clear_config()


def _macro(name):
  return gin.query_parameter(f'%{name}').scoped_configurable_fn()


def test_every_t5x_compat_gin_file_is_tested_here():
  assert sorted(p.name for p in GIN_DIR.glob('*.gin')) == [
      'decoder_only.gin', 'encoder_decoder.gin', 'run_settings.gin']


def test_encoder_decoder_gin_binds_our_network_into_t5x_model(standin_t5x):
  with _parsed(['sizes/tiny.gin', 'attention/fma.gin', 'encoder_decoder.gin'],
               ['BEAM_SIZE = 3', 'BEAM_ALPHA = 0.9', 'AXIS_RULES = '
                '@t5x_partitioning.standard_logical_axis_rules()']):
    model = _macro('MODEL')
    rules = _macro('AXIS_RULES')
    decoded = model._decode_fn()  # pylint: disable=protected-access
  assert isinstance(model, standin_t5x.models.EncoderDecoderModel)
  assert isinstance(model.module, networks.EncoderDecoder)
  assert model.module.config.attention.__class__.__name__ == 'Fma'
  assert type(model.input_vocabulary) is type(model.output_vocabulary)
  assert model.input_vocabulary.vocab_size > 0  # %VOCABULARY was built
  assert model.default_decoder_params.num_decodes == 3
  assert decoded['alpha'] == 0.9
  assert model.z_loss == 1e-4
  optimizer = model.optimizer_def
  assert (optimizer.decay_rate, optimizer.step_offset) == (0.8, 0)
  factor_rules = optimizer.logical_factor_rules
  assert factor_rules[ax.DOWNSAMPLE_WINDOW] == t5x_standins.FactorDim.NONE
  assert factor_rules['embed'] == t5x_standins.FactorDim.ROW  # T5X's own kept
  assert (ax.CACHE_HEADS, ax.MODEL) in rules and (ax.DOWNSAMPLE_RANK,
                                                  None) in rules


def test_decoder_only_gin_decodes_from_bos_with_our_sampling(standin_t5x):
  with _parsed(['sizes/decoder_only_tiny.gin', 'attention/fovea.gin',
                'decoder_only.gin'],
               ['SAMPLING_TEMPERATURE = 0.5', 'SAMPLING_TOPK = 7']):
    model = _macro('MODEL')
    # T5X hands a prefilled cache's prompt ends; ours start every row at 0.
    decoded = model._decode_fn(initial_index=[3, 5])  # pylint: disable=protected-access
  assert isinstance(model, standin_t5x.models.DecoderOnlyModel)
  assert type(model).__module__ == 'fovea_jax.t5x_compat.models'
  assert isinstance(model.module, networks.DecoderOnly)
  assert model.module.config.attention.__class__.__name__ == 'Fovea'
  assert decoded == {'num_decodes': 1, 'temperature': 0.5, 'topk': 7,
                     'topp': 0.0, 'initial_index': None}
  assert model.loss_normalizing_factor == 'NUM_REAL_TARGET_TOKENS'


def test_run_settings_gin_turns_off_task_caches_and_keeps_packing(
    standin_t5x, tmp_path):
  """After T5X's pretrain.gin (which packs train data; a stand-in file here),
  run_settings.gin turns the task cache off and leaves packing on."""
  del standin_t5x
  run_file = tmp_path / 'pretrain.gin'
  run_file.write_text('\n'.join([
      'from __gin__ import dynamic_registration',
      'from t5x import utils',
      "MIXTURE_OR_TASK_NAME = 'stdlib_lm'",
      'train/utils.DatasetConfig.mixture_or_task_name = %MIXTURE_OR_TASK_NAME',
      "train/utils.DatasetConfig.task_feature_lengths = {'targets': 8}",
      "train/utils.DatasetConfig.split = 'train'",
      'train/utils.DatasetConfig.batch_size = 2',
      'train/utils.DatasetConfig.shuffle = True',
      'train/utils.DatasetConfig.seed = 0',
      'train/utils.DatasetConfig.pack = True',
      'TRAIN_DATA = @train/utils.DatasetConfig()', '']))
  with _parsed([str(run_file), 'run_settings.gin']):
    config = _macro('TRAIN_DATA')
    assert gin.query_parameter('%USE_CACHED_TASKS') is False
  assert config.pack is True
  assert 'stdlib_lm' in seqio.TaskRegistry.names()  # its import registered it

"""Every override form docs/training.md teaches is applied (the value reaches
what the run builds), and a run's saved config.gin can be fed back with copied
bindings."""
import pathlib
import re

import gin
import pytest

from fovea_jax.runs import entry_points
from fovea_jax.runs import gin_utils
from fovea_jax.runs import train_lib
from fovea_jax.training import train_loop

FILES = ['sizes/tiny.gin', 'attention/fovea.gin', 'runs/pretrain.gin']
RUN = ["MIXTURE_OR_TASK_NAME = 'stdlib_summarization'",
       "TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 16}",
       'TRAIN_STEPS = 1']
# The forms of the table in docs/training.md, as `--gin.X=V` hands them to gin.
DOCUMENTED = [
    'fovea.Fovea.block_len = 64',                          # model option
    'network.Config.num_heads = 2',                        # model option
    'fovea_jax.layers.schemes.fovea.Fovea.wing = 2',       # full path
    'train_lib.train.stats_period = 7',                    # run option
    'trainer.Trainer.num_microbatches = 2',                # run option
    'BATCH_SIZE = 4',                                      # macro
]


def _what_train_builds(monkeypatch, tmp_path, files, bindings):
  """Runs `train` as the entry point does, up to the training loop, and
  returns what it built (the loop and the input pipeline are replaced)."""
  built = {}

  class RecordingIterator:
    def __init__(self, cfg, **kwargs):
      del kwargs
      built['dataset_cfg'] = cfg

  def record_loop(trainer, init_variables_fn, batches, **kwargs):
    del init_variables_fn, batches
    built.update(trainer=trainer, **kwargs)
    return 'loop result'

  monkeypatch.setattr(train_lib, 'DataIterator', RecordingIterator)
  monkeypatch.setattr(train_loop, 'run', record_loop)
  assert entry_points.run_configured(
      'train', files, RUN + [f"MODEL_DIR = '{tmp_path}'"] + bindings
  ) == 'loop result'
  return built


@pytest.mark.slow
def test_every_documented_override_form_is_applied(monkeypatch, tmp_path):
  built = _what_train_builds(monkeypatch, tmp_path / 'run', FILES, DOCUMENTED)
  config = built['trainer'].model.module.config
  assert (config.attention.block_len, config.attention.wing) == (64, 2)
  assert config.num_heads == 2
  assert built['log_period'] == 7
  assert built['trainer'].num_microbatches == 2
  assert built['dataset_cfg'].batch_size == 4


@pytest.mark.slow
def test_saved_config_runs_again_with_copied_bindings(monkeypatch, tmp_path):
  _what_train_builds(monkeypatch, tmp_path / 'first', FILES,
                     ['fovea.Fovea.block_len = 64'])
  saved = (tmp_path / 'first' / 'config.gin').read_text()
  line = next(l for l in saved.splitlines()
              if l.startswith('network.Config.num_heads'))
  assert line == 'network.Config.num_heads = 4'
  gin.clear_config()
  built = _what_train_builds(
      monkeypatch, tmp_path / 'second', [str(tmp_path / 'first' / 'config.gin')],
      [line.replace('4', '1'), 'lr_schedules.create_learning_rate_scheduler.'
       'warmup_steps = 5'])
  config = built['trainer'].model.module.config
  assert config.attention.block_len == 64  # from the saved file
  assert config.num_heads == 1             # the copied, edited line


@pytest.mark.parametrize('binding,message', [
    ('BATCH_SIZ = 3', "Unknown macro 'BATCH_SIZ'.*Did you mean BATCH_SIZE"),
    ('foveaa.Fovea.block_len = 3',
     r"No configurable matching 'foveaa.Fovea'.*Nearest.*'fovea.Fovea'"),
    ('fovea.Fovea.blok_len = 3',
     "doesn't have a parameter named 'blok_len'.*Did you mean block_len"),
])
def test_unknown_names_fail_naming_the_nearest(binding, message):
  entry_points._register_configurables()  # pylint: disable=protected-access
  with pytest.raises(gin_utils.GinConfigError, match=f'(?s){message}'):
    gin_utils.parse_gin(FILES, RUN + [binding])


def test_gin_files_resolve_package_first_then_search_paths_then_cwd(
    tmp_path, monkeypatch):
  shipped = gin_utils.resolve_gin_file('sizes/tiny.gin')
  assert shipped.startswith(gin_utils.packaged_gin_dir())
  (tmp_path / 'sizes').mkdir()
  (tmp_path / 'sizes' / 'tiny.gin').write_text('# shadow\n')
  (tmp_path / 'mine.gin').write_text('# mine\n')
  monkeypatch.chdir(tmp_path)
  assert gin_utils.resolve_gin_file('sizes/tiny.gin') == shipped
  assert gin_utils.resolve_gin_file('mine.gin') == str(tmp_path / 'mine.gin')
  other = tmp_path / 'other'
  other.mkdir()
  (other / 'mine.gin').write_text('# searched\n')
  assert gin_utils.resolve_gin_file('mine.gin', [str(other)]) == str(
      other / 'mine.gin')
  with pytest.raises(gin_utils.GinConfigError, match='sizes/tiny.gin'):
    gin_utils.resolve_gin_file('sizes/tinny.gin')


REPO = pathlib.Path(__file__).parents[2]


def test_one_registration_convention():
  """Code declares configurables with a bare @gin.configurable (registered under
  its full module path); gin files use dynamic registration and import modules
  under their own names, so `module.Name` works everywhere."""
  for path in (REPO / 'fovea_jax').rglob('*.py'):
    text = path.read_text()
    assert 'external_configurable' not in text, path
    for match in re.finditer(r'@gin\.configurable\(([^)]*)\)', text):
      assert match.group(1).startswith('denylist='), (path, match.group(0))
  gin_files = [*(REPO / 'gin_configs').rglob('*.gin'),
               *(REPO / 'fovea_jax').rglob('*.gin')]
  assert len(gin_files) > 20
  for path in gin_files:
    statements = [l for l in path.read_text().splitlines()
                  if l and not l.startswith('#')]
    if any(re.match(r'(from \S+ )?import ', l) for l in statements):
      assert statements[0] == 'from __gin__ import dynamic_registration', path
    if 't5x_compat' in path.parts:
      continue  # runs inside T5X, whose own `models` etc. its aliases avoid
    for line in statements:
      if line.startswith('from fovea_jax') or line.startswith('import fovea'):
        assert re.fullmatch(r'from fovea_jax[\w.]* import \w+', line), (
            path, line)

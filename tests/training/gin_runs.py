"""Runs the gin-configured entry-point functions in-process on tiny settings."""
import os
import subprocess
import sys
import textwrap

import numpy as np

from fovea_jax.runs import entry_points
from fovea_jax.runs import export_loader
from fovea_jax.runs import gin_utils

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN_MODEL_GIN = os.path.join(HERE, 'standin_model.gin')
TASK = "MIXTURE_OR_TASK_NAME = 'stdlib_summarization'"
LENGTHS = {'inputs': 64, 'targets': 16}


def run(name, run_file, bindings, model_gin=STANDIN_MODEL_GIN):
  """Parses model + run file + bindings like the command line, then runs."""
  model_gin = [model_gin] if isinstance(model_gin, str) else list(model_gin)
  return entry_points.run_configured(name, model_gin + [run_file], bindings)


def train_bindings(model_dir, steps, **extra):
  bindings = [TASK, f'TASK_FEATURE_LENGTHS = {LENGTHS}', f'TRAIN_STEPS = {steps}',
              f"MODEL_DIR = '{model_dir}'", 'BATCH_SIZE = 8',
              'CHECKPOINT_PERIOD = 10', 'train_lib.train.stats_period = 1',
              'train_lib.train.show_progress = False',
              "lr_schedules.create_learning_rate_scheduler.factors = 'constant'",
              'lr_schedules.create_learning_rate_scheduler.base_learning_rate = 0.01']
  return bindings + [f'{k} = {v}' for k, v in extra.items()]


def checkpoint_bindings(checkpoint, output_macro, output_dir, dataset=True):
  """Bindings of eval/infer (dataset=True) or export (no dataset macros: an
  unknown macro is an error)."""
  data = [TASK, 'BATCH_SIZE = 4'] if dataset else []
  return data + [f'TASK_FEATURE_LENGTHS = {LENGTHS}',
                 f"CHECKPOINT_PATH = '{checkpoint}'",
                 f"{output_macro} = '{output_dir}'"]


def standin_model():
  """The MODEL of standin_model.gin, built outside any run."""
  import gin  # pylint: disable=g-import-not-at-top
  entry_points._register_configurables()  # pylint: disable=protected-access
  gin_utils.parse_gin([STANDIN_MODEL_GIN], [])
  return gin.query_parameter('%MODEL').scoped_configurable_fn()


EXPORT_LOADER = export_loader.__file__
_CALL_WITHOUT_FOVEA = textwrap.dedent('''
    import runpy, sys
    sys.modules['fovea_jax'] = None  # Any import of our code would now fail.
    import numpy as np
    load_exported = runpy.run_path(sys.argv[1])['load_exported']
    functions, params = load_exported(sys.argv[2])
    np.save(sys.argv[4],
            np.asarray(functions['predict'].call(params, np.load(sys.argv[3]))))
''')


def call_export_without_fovea(export_dir, tokens, work_dir):
  """`predict.jax_export` of `export_dir`, loaded by fovea_jax's
  export_loader.py run as a plain file, called on `tokens` by a separate Python
  (-I: no PYTHONPATH, no user site) in which fovea_jax cannot import."""
  np.save(os.path.join(work_dir, 'tokens.npy'), tokens)
  subprocess.run([sys.executable, '-I', '-c', _CALL_WITHOUT_FOVEA,
                  EXPORT_LOADER, str(export_dir),
                  os.path.join(work_dir, 'tokens.npy'),
                  os.path.join(work_dir, 'out.npy')],
                 check=True, timeout=300, cwd=str(work_dir))
  return np.load(os.path.join(work_dir, 'out.npy'))

"""Runs one study row: train and evaluate through the user's gin files.

A row trains with `fovea_jax.runs.entry_points.run_configured('train', ...)`,
exactly what `python -m fovea_jax.train --gin_file=... --gin.X=...` runs, then
evaluates with experiments.evaluate_by_position (runs/eval.gin's settings). The
equivalent command lines are recorded with each row's result.
"""
import json
import os
import shlex
import statistics
import time

import gin
import jax
import numpy as np
import orbax.checkpoint as ocp

from experiments import attended_fraction
from experiments import evaluate_by_position as evaluate_by_position_lib
from fovea_jax.runs import entry_points
from fovea_jax.runs import gin_utils
from fovea_jax.training import checkpoints
from fovea_jax.training import metrics_writers
from fovea_jax.training import model_inputs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROW_RESULT = 'row_result.json'


def _literal(value) -> str:
  return repr(dict(value)) if hasattr(value, 'items') else repr(value)


def row_dir(work_dir: str, row) -> str:
  return os.path.join(work_dir, row['name'])


def train_args(config, row, work_dir: str):
  """(gin files, gin bindings) of the row's training run."""
  files = [config.model_gin, row['attention'], 'runs/pretrain.gin']
  steps = config.train_steps + row['extra_steps']
  bindings = [
      f'MIXTURE_OR_TASK_NAME = {config.task!r}',
      f'TASK_FEATURE_LENGTHS = {_literal(config.feature_lengths)}',
      f'TRAIN_STEPS = {steps}',
      f'BATCH_SIZE = {config.batch_size}',
      f'RANDOM_SEED = {row["seed"]}',
      f'PACKING = {bool(config.packing)}',
      f'MODEL_DIR = {row_dir(work_dir, row)!r}',
      f'CHECKPOINT_PERIOD = {steps}',
      'CHECKPOINTS_TO_KEEP = 1',
      f'train_lib.train.stats_period = {max(1, min(10, steps // 5))}',
      'train_lib.train.show_progress = False',
      *config.optimizer_bindings, *config.model_bindings, *row['bindings'],
  ]
  if row['init_from']:
    # A warm start restarts at step 0 with a fresh optimizer: extra_steps more.
    bindings[2] = f'TRAIN_STEPS = {row["extra_steps"]}'
    files[-1] = 'runs/finetune.gin'
    bindings.append(
        'INITIAL_CHECKPOINT_PATH = '
        f'{checkpoints.step_dir(warm_start_dir(work_dir, row), 0)!r}')
  return files, bindings


def warm_start_dir(work_dir: str, row) -> str:
  return os.path.join(work_dir, f'{row["name"]}_warm_start')


def write_warm_start(work_dir: str, row, files, bindings) -> str:
  """The `init_from` row's latest params, cut to this row's network.

  Switching the encoder from TGlobal to fovea keeps every weight the fovea
  network has (all of them: fovea adds none) and leaves TGlobal's own (the
  global-token layer norm, the side position table) behind. Written as a
  params-only checkpoint that runs/finetune.gin's INITIAL_CHECKPOINT_PATH names.
  """
  source = _checkpoint_dir(os.path.join(work_dir, row['init_from']))
  gin_utils.parse_gin(files, bindings, [REPO_ROOT])
  model = gin.query_parameter('%MODEL').scoped_configurable_fn()
  dataset_cfg = gin.query_parameter(
      'train_lib.train.train_dataset_cfg').scoped_configurable_fn()
  shapes, types = model_inputs.input_shapes_and_types(model, dataset_cfg)
  target = jax.eval_shape(lambda: model.get_initial_variables(
      jax.random.PRNGKey(0), shapes, types))['params']
  restored = ocp.PyTreeCheckpointer().restore(os.path.join(source, 'params'))

  def cut(target_node, source_node, path):
    if not hasattr(target_node, 'items'):
      if tuple(source_node.shape) != tuple(target_node.shape):
        raise ValueError(f'{path}: {source} holds shape {source_node.shape}, '
                         f'this network needs {target_node.shape}.')
      return np.asarray(source_node)
    missing = [k for k in target_node if k not in source_node]
    if missing:
      raise ValueError(f'{path}: {source} has no {missing}; cannot warm-start '
                       f'row {row["name"]} from it.')
    return {k: cut(v, source_node[k], f'{path}/{k}')
            for k, v in target_node.items()}

  params = cut(target, restored, 'params')
  return checkpoints.save_params(warm_start_dir(work_dir, row), params,
                                 meta={'step': 0, 'converted_from': source})


def _checkpoint_dir(model_dir: str) -> str:
  """The newest checkpoint_<step> of a finished row."""
  steps = [int(n.split('_')[1]) for n in os.listdir(model_dir)
           if n.startswith('checkpoint_') and n.split('_')[1].isdigit()]
  if not steps:
    raise FileNotFoundError(f'No checkpoint_<step> in {model_dir}: run the row '
                            'it warm-starts from first.')
  return os.path.join(model_dir, f'checkpoint_{max(steps)}')


def eval_args(config, row, work_dir: str):
  files = [config.model_gin, row['attention'],
           'experiments/gin/evaluate_by_position.gin']
  bindings = [
      f'MIXTURE_OR_TASK_NAME = {config.task!r}',
      f'TASK_FEATURE_LENGTHS = {_literal(config.feature_lengths)}',
      f'CHECKPOINT_PATH = {row_dir(work_dir, row)!r}',
      f'EVAL_OUTPUT_DIR = {os.path.join(row_dir(work_dir, row), "eval")!r}',
      f'BATCH_SIZE = {config.eval_batch_size}',
      f'evaluate_by_position.evaluate_by_position.num_examples = {config.eval_examples}',
      f'evaluate_by_position.evaluate_by_position.bins = {tuple(config.position_bins)!r}',
      'evaluate_by_position.evaluate_by_position.repeat_bins = '
      f'{tuple(config.repeat_bins)!r}',
      *config.model_bindings, *row['bindings'],
  ]
  return files, bindings


def command_line(module: str, files, bindings) -> str:
  args = [f'--gin_file={f}' for f in files]
  args += [f'--gin.{b.replace(" = ", "=", 1)}' for b in bindings]
  return ' '.join(['python -m', module] + [shlex.quote(a) for a in args])


def _step_seconds(model_dir: str) -> float:
  """Median seconds per step over the logged windows after the first (which
  includes compilation)."""
  records = metrics_writers.read_jsonl(os.path.join(model_dir, 'metrics.jsonl'))
  rates = [r['steps_per_second'] for r in records[1:]
           if isinstance(r.get('steps_per_second'), float)]
  if not rates:
    rates = [r['steps_per_second'] for r in records]
  return float(statistics.median(1.0 / r for r in rates))


def _final_train_loss(model_dir: str) -> float:
  records = metrics_writers.read_jsonl(os.path.join(model_dir, 'metrics.jsonl'))
  return float(records[-1]['loss'])


def _scheme_fraction(config) -> float:
  model = gin.query_parameter('%MODEL').scoped_configurable_fn()
  network_config = model.module.config
  length = config.feature_lengths[config.length_feature]
  return attended_fraction.stack_fraction(
      network_config.attention, config.num_layers, length, config.causal)


def run_row(config, row, work_dir: str) -> dict:
  """Trains and evaluates one row in this process; writes and returns its result."""
  out = row_dir(work_dir, row)
  start = time.time()
  files, bindings = train_args(config, row, work_dir)
  if row['init_from']:
    write_warm_start(work_dir, row, files, bindings)
  trained = entry_points.run_configured('train', files, bindings,
                                        search_paths=[REPO_ROOT])
  if trained.stopped_by_signal:
    raise RuntimeError(
        f'Row {row["name"]} was stopped (SIGTERM) at step '
        f'{int(trained.state.step)}; run the study again to redo this row.')
  train_seconds = time.time() - start
  files_e, bindings_e = eval_args(config, row, work_dir)
  gin_utils.parse_gin(files_e, bindings_e, [REPO_ROOT])
  fraction = _scheme_fraction(config)
  evaluation = evaluate_by_position_lib.evaluate_by_position()
  result = {
      'name': row['name'], 'label': row['label'], 'seed': row['seed'],
      'attention_gin': row['attention'], 'bindings': list(row['bindings']),
      'init_from': row['init_from'],
      'train_steps': config.train_steps + row['extra_steps'],
      'step_seconds': _step_seconds(out),
      'final_train_loss': _final_train_loss(out),
      'attended_fraction': fraction,
      'train_wall_seconds': train_seconds,
      'row_wall_seconds': time.time() - start,
      'evaluation': evaluation,
      'train_command': command_line('fovea_jax.train', files, bindings),
  }
  with open(os.path.join(out, ROW_RESULT), 'w') as f:
    json.dump(result, f, indent=2)
  return result


def load_row_result(work_dir: str, row) -> dict:
  with open(os.path.join(row_dir(work_dir, row), ROW_RESULT)) as f:
    return json.load(f)


# Imported for its gin registration (evaluate_by_position is bound by name).
entry_points._register_configurables()  # pylint: disable=protected-access

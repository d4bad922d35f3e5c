"""Quickstart: train, evaluate, save and export a tiny fovea LongT5 on CPU.

    python -m fovea_jax.quickstart [--workdir=/tmp/fovea_quickstart]

Summarises Python standard-library modules (module source without its docstring
-> the docstring's first paragraph, bytes; no download), using exactly what the
command-line entry points run: `sizes/tiny.gin` + `attention/fovea.gin` with
`runs/pretrain.gin`, then `runs/eval.gin` (ROUGE on the validation split) and
`runs/export.gin`. Prints where everything went and the equivalent commands.
Defaults finish in under 10 minutes on two CPU cores.
"""
import json
import os
import time

from absl import app
from absl import flags

_WORKDIR = flags.DEFINE_string('workdir', '/tmp/fovea_quickstart',
                               'Where the run, evaluation and export go.')
_TRAIN_STEPS = flags.DEFINE_integer('train_steps', 200, 'Training steps.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 8, 'Global batch size.')
_INPUTS_LENGTH = flags.DEFINE_integer('inputs_length', 1024,
                                      'Source bytes per example.')
_TARGETS_LENGTH = flags.DEFINE_integer('targets_length', 128,
                                       'Summary bytes per example.')

MODEL_GIN = ('sizes/tiny.gin', 'attention/fovea.gin')
TASK = 'stdlib_summarization'


def _common_bindings(lengths):
  """What train, eval and export share (export reads no task: an unknown
  macro on the command line is an error)."""
  return [f'TASK_FEATURE_LENGTHS = {lengths}',
          'DROPOUT_RATE = 0.0',  # A few hundred steps: nothing to regularise yet.
          'BEAM_SIZE = 1']       # Greedy decoding keeps evaluation quick.


def _command(module, run_file, bindings):
  files = ' '.join(f'--gin_file={f}' for f in (*MODEL_GIN, run_file))
  flags_text = ' '.join(f'"--gin.{b.replace(" = ", "=", 1)}"' for b in bindings)
  return f'python -m fovea_jax.{module} {files} {flags_text}'


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from fovea_jax.training import entry_points
  entry_points.show_own_info_logs()
  workdir = os.path.abspath(_WORKDIR.value)
  model_dir = os.path.join(workdir, 'model')
  eval_dir = os.path.join(workdir, 'eval')
  export_dir = os.path.join(workdir, 'export')
  lengths = {'inputs': _INPUTS_LENGTH.value, 'targets': _TARGETS_LENGTH.value}
  common = _common_bindings(lengths)
  start, start_cpu = time.time(), time.process_time()

  task = [f"MIXTURE_OR_TASK_NAME = '{TASK}'"]
  train_bindings = task + common + [
      f'TRAIN_STEPS = {_TRAIN_STEPS.value}', f"MODEL_DIR = '{model_dir}'",
      f'BATCH_SIZE = {_BATCH_SIZE.value}', 'CHECKPOINT_PERIOD = 100',
      "lr_schedules.create_learning_rate_scheduler.factors = "
      "'constant * rsqrt_decay'",
      'lr_schedules.create_learning_rate_scheduler.base_learning_rate = 1.0',
      'lr_schedules.create_learning_rate_scheduler.warmup_steps = 100']
  result = entry_points.run_configured('train', MODEL_GIN + ('runs/pretrain.gin',),
                                       train_bindings)
  train_seconds = time.time() - start

  eval_bindings = task + common + [f"CHECKPOINT_PATH = '{model_dir}'",
                            f"EVAL_OUTPUT_DIR = '{eval_dir}'", 'BATCH_SIZE = 8']
  results = entry_points.run_configured('evaluate', MODEL_GIN + ('runs/eval.gin',),
                                        eval_bindings)
  rouge = results[TASK]

  export_bindings = common + [f"CHECKPOINT_PATH = '{model_dir}'",
                              f"EXPORT_OUTPUT_DIR = '{export_dir}'"]
  entry_points.run_configured('export', MODEL_GIN + ('runs/export.gin',),
                              export_bindings)
  total_seconds = time.time() - start

  summary = {
      'train_steps': int(result.state.step),
      'final_loss': float(result.last_metrics['loss']),
      'rouge': {k: round(v, 2) for k, v in rouge.items()},
      'train_seconds': round(train_seconds, 1),
      'total_seconds': round(total_seconds, 1),
      # CPU time of this process: what the run costs when the machine is shared.
      'total_cpu_seconds': round(time.process_time() - start_cpu, 1),
  }
  with open(os.path.join(workdir, 'quickstart_summary.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  resumed = (f' (resumed from step {result.start_step} found in {model_dir})'
             if result.start_step else '')
  print('\n'.join([
      '',
      f'fovea_jax quickstart finished in {total_seconds / 60:.1f} min '
      f'({summary["train_steps"]} steps, final loss {summary["final_loss"]:.3f})'
      f'{resumed}.',
      f'ROUGE on {TASK} validation (F x 100): ' + ', '.join(
          f'{k} {v:.2f}' for k, v in sorted(rouge.items())),
      '',
      f'  checkpoints, metrics.jsonl, TensorBoard events: {model_dir}',
      f'  evaluation results and predictions:            {eval_dir}',
      f'  export (jax.export functions, safetensors):    {export_dir}',
      f'  summary:                                       '
      f'{os.path.join(workdir, "quickstart_summary.json")}',
      '',
      'The same steps from the command line:',
      '  ' + _command('train', 'runs/pretrain.gin', train_bindings),
      '  ' + _command('eval', 'runs/eval.gin', eval_bindings),
      '  ' + _command('export', 'runs/export.gin', export_bindings),
  ]))


if __name__ == '__main__':
  app.run(main)

"""Quickstart: a fovea language model and a fovea summarizer that learn, end
to end, on CPU, in under 10 minutes.

    python -m fovea_jax.quickstart [--workdir=/tmp/fovea_quickstart] [--fresh]

Both parts use the offline Python-standard-library tasks (no download) and
exactly what the command-line entry points run (gin files plus bindings; the
equivalent commands are printed at the end):

1. Language model, the part that shows learning: a small decoder-only LM with
   causal fovea attention trained on `stdlib_lm`; validation bits per byte
   beside the unigram baseline (byte frequencies of the training split, scored
   on the same validation bytes).
2. Summarization: a small fovea LongT5 on `stdlib_outline` (a window of up to
   255 bytes of a module's source -> the names its `def` and `class` lines
   define there, in order: every word of the summary is somewhere in the
   input, and the model has to learn to find and copy it), train, ROUGE beside
   the lead baseline (the input's first bytes), three (input, prediction,
   target) examples, export. `stdlib_summarization`
   (source -> the docstring's first paragraph) runs through the same path
   with `--gin.MIXTURE_OR_TASK_NAME="'stdlib_summarization'"`.

Results go to `<workdir>/quickstart_summary.json`. Running it again reuses a
finished run with the same settings (a run with other settings is started
afresh, as is everything under --fresh), and the export replaces the earlier
one, each with a line saying so.
"""
import json
import os
import shutil
import time

from absl import app
from absl import flags


_WORKDIR = flags.DEFINE_string('workdir', '/tmp/fovea_quickstart',
                               'Where the runs, evaluations and export go.')
_FRESH = flags.DEFINE_bool('fresh', False,
                           'Delete the earlier quickstart runs in workdir and '
                           'train again.')
_LM_STEPS = flags.DEFINE_integer('lm_steps', 300, 'Language-model training steps.')
_LM_LENGTH = flags.DEFINE_integer('lm_length', 512,
                                  'Bytes per language-model training example.')
_LM_EMB_DIM = flags.DEFINE_integer('lm_emb_dim', 128,
                                   'Language-model width (d_model).')
# The summarizer learns to copy names from its input abruptly, after about
# 500 steps of batch 32 (before that it writes names common in the training
# set whatever the input); 700 leave a margin.
_SUMMARIZATION_STEPS = flags.DEFINE_integer(
    'summarization_steps', 700, 'Summarization training steps.')
_SUMMARIZATION_EMB_DIM = flags.DEFINE_integer(
    'summarization_emb_dim', 64, 'Summarization model width (d_model).')
# 256 tokens hold a whole `stdlib_outline` window and its end of sequence; 32
# hold the names of 95% of the windows (longer ones are truncated).
_INPUTS_LENGTH = flags.DEFINE_integer('inputs_length', 256,
                                      'Source bytes per summarization example.')
_TARGETS_LENGTH = flags.DEFINE_integer('targets_length', 32,
                                       'Summary bytes per example.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 8,
                                   'Global batch size of the language model.')
# At batch 8 the copying had not formed after 1,500 steps (12,000 examples,
# training accuracy still below 0.5); at batch 32 it forms after about 500
# steps (16,000 examples).
_SUMMARIZATION_BATCH_SIZE = flags.DEFINE_integer(
    'summarization_batch_size', 32, 'Global batch size of the summarizer.')
_EVAL_EXAMPLES = flags.DEFINE_integer(
    'eval_examples', None, 'Validation examples to score (default: all); the '
    'baselines are scored on the same ones.')

ATTENTION_GIN = 'attention/fovea.gin'
LM_TASK = 'stdlib_lm'
SUMMARIZATION_TASK = 'stdlib_outline'
# The file in each run folder recording the bindings it was trained with.
SETTINGS_FILE = 'quickstart_settings.json'


def _command(module, gin_files, bindings):
  files = ' '.join(f'--gin_file={f}' for f in gin_files)
  flags_text = ' '.join(f'"--gin.{b.replace(" = ", "=", 1)}"' for b in bindings)
  return f'python -m fovea_jax.{module} {files} {flags_text}'


class Part:
  """One model of the quickstart: its gin files, folders and command lines."""

  def __init__(self, name, workdir, model_gin, task, lengths, model_bindings):
    self.name = name
    self.dir = os.path.join(workdir, name)
    self.model_dir = os.path.join(self.dir, 'model')
    self.model_gin = (model_gin, ATTENTION_GIN)
    # What every step shares. The task is not among them: export reads no
    # task, and an unknown macro on the command line is an error.
    self.common = [f'TASK_FEATURE_LENGTHS = {lengths}',
                   'DROPOUT_RATE = 0.0',  # Too few steps to need it.
                   *model_bindings]
    self.task_binding = f"MIXTURE_OR_TASK_NAME = '{task}'"
    self.task = task
    self.lengths = lengths
    self.commands = []

  def run(self, function, run_file, bindings):
    # pylint: disable=g-import-not-at-top
    from fovea_jax.runs import entry_points
    gin_files = self.model_gin + (run_file,)
    self.commands.append(_command(
        {'evaluate': 'eval'}.get(function, function), gin_files,
        self.common + bindings))
    return entry_points.run_configured(function, gin_files,
                                       self.common + bindings)

  def checkpoint_bindings(self, lengths=None, with_task=True):
    bindings = [f"CHECKPOINT_PATH = '{self.model_dir}'"]
    if with_task:
      bindings.insert(0, self.task_binding)
    if lengths is not None:  # After self.common, so it wins.
      bindings.append(f'TASK_FEATURE_LENGTHS = {lengths}')
    return bindings

  def train(self, steps, train_bindings):
    """Trains (or reuses / resumes a run with the same settings); prints what
    it found."""
    # pylint: disable=g-import-not-at-top
    from fovea_jax.training import checkpoints
    bindings = [self.task_binding, f'TRAIN_STEPS = {steps}',
                f"MODEL_DIR = '{self.model_dir}'", *train_bindings]
    settings_path = os.path.join(self.dir, SETTINGS_FILE)
    settings = {'gin_files': list(self.model_gin), 'bindings':
                self.common + bindings}
    if os.path.isdir(self.dir):
      try:
        with open(settings_path) as f:
          earlier = json.load(f)
      except (OSError, ValueError):
        earlier = None
      if earlier != settings:
        print(f'[{self.name}] {self.dir} holds a run with other settings: '
              'starting afresh.', flush=True)
        shutil.rmtree(self.dir)
    found = checkpoints.find_checkpoint(
        checkpoints.latest_in(self.model_dir, fallback_to_scratch=True))
    if found:
      step = int(found.rsplit('_', 1)[1])
      print(f'[{self.name}] Found a '
            f'{"finished" if step >= steps else "unfinished"} run at step '
            f'{step} in {self.model_dir}: '
            f'{"reusing it" if step >= steps else "resuming it"} '
            '(--fresh trains again).', flush=True)
    os.makedirs(self.dir, exist_ok=True)
    with open(settings_path, 'w') as f:
      json.dump(settings, f, indent=2)
    start = time.time()
    result = self.run('train', 'runs/pretrain.gin', bindings)
    return result, time.time() - start


def _width(emb_dim):
  """A tiny size file's network at width `emb_dim`: 4 heads, MLP twice as wide."""
  return [f'network.Config.emb_dim = {emb_dim}',
          f'network.Config.mlp_dim = {2 * emb_dim}',
          'network.Config.num_heads = 4',
          f'network.Config.head_dim = {emb_dim // 4}']


def _train_bindings(batch_size, base_learning_rate, warmup_steps):
  schedule = 'lr_schedules.create_learning_rate_scheduler'
  return [f'BATCH_SIZE = {batch_size}', 'CHECKPOINT_PERIOD = 100',
          f"{schedule}.factors = 'constant * linear_warmup * rsqrt_decay'",
          f'{schedule}.base_learning_rate = {base_learning_rate}',
          f'{schedule}.warmup_steps = {warmup_steps}']


def _eval_bindings(part, eval_examples):
  return part.checkpoint_bindings() + [
      f"EVAL_OUTPUT_DIR = '{os.path.join(part.dir, 'eval')}'",
      'BATCH_SIZE = 16', f'eval_lib.evaluate.num_examples = {eval_examples}']


def _verdict(margin, unit):
  """How the model compares with its baseline; `margin` > 0 is better."""
  if margin > 0:
    return f'better by {margin:.3f} {unit}'
  return f'NOT better ({-margin:.3f} {unit} worse)'


def _short(text, limit=160):
  text = text.replace('\n', '\\n')
  return text if len(text) <= limit else '...' + text[-limit:]


def language_model(workdir):
  """Trains and evaluates the LM beside the unigram baseline."""
  # pylint: disable=g-import-not-at-top
  from fovea_jax.evaluation import baselines
  from fovea_jax.tensorflow_runtime import seqio
  part = Part('language_model', workdir, 'sizes/decoder_only_tiny.gin', LM_TASK,
              {'targets': _LM_LENGTH.value}, _width(_LM_EMB_DIM.value))
  result, train_seconds = part.train(
      _LM_STEPS.value, _train_bindings(_BATCH_SIZE.value, 1.0, 50))
  metrics = part.run('evaluate', 'runs/eval.gin',
                     _eval_bindings(part, _EVAL_EXAMPLES.value))[LM_TASK]
  baseline = baselines.unigram_language_model(
      seqio.get_mixture_or_task(LM_TASK), 'validation', part.lengths,
      _EVAL_EXAMPLES.value)
  return part, {
      'task': LM_TASK,
      'metric': 'bits_per_byte (validation, lower is better)',
      'model': round(metrics['bits_per_byte'], 4),
      'baseline': round(baseline['bits_per_byte'], 4),
      'baseline_name': 'unigram: byte frequencies of the training split',
      'train_steps': int(result.state.step),
      'final_train_loss': _final_loss(result),
      'train_seconds': round(train_seconds, 1),
      'reused_run': result.start_step >= _LM_STEPS.value,
  }


def _evaluated_examples(eval_dir, task, count):
  """The first `count` (input, prediction, target) of the newest evaluation
  (seqio's JSONLogger writes `<task>-<step>.jsonl`)."""
  runs = sorted(name for name in os.listdir(eval_dir)
                if name.startswith(f'{task}-') and name[len(task) + 1:-6].isdigit()
                and name.endswith('.jsonl'))
  if not runs:
    raise FileNotFoundError(f'No {task}-<step>.jsonl predictions in {eval_dir}.')
  examples = []
  with open(os.path.join(eval_dir, runs[-1])) as f:
    for line in f:
      row = json.loads(line)
      examples.append({'input': row['input']['inputs_pretokenized'],
                       'prediction': row['prediction'],
                       'target': row['target']})
      if len(examples) == count:
        break
  return examples


def _final_loss(result):
  loss = result.last_metrics.get('loss')
  return None if loss is None else round(float(loss), 4)


def summarization(workdir):
  """Trains, evaluates (beside the lead baseline) and exports the
  summarizer."""
  # pylint: disable=g-import-not-at-top
  from fovea_jax.evaluation import baselines
  from fovea_jax.tensorflow_runtime import seqio
  lengths = {'inputs': _INPUTS_LENGTH.value, 'targets': _TARGETS_LENGTH.value}
  part = Part('summarization', workdir, 'sizes/tiny.gin', SUMMARIZATION_TASK,
              lengths, _width(_SUMMARIZATION_EMB_DIM.value) +
              ['BEAM_SIZE = 1'])  # Greedy keeps evaluation quick.
  result, train_seconds = part.train(
      _SUMMARIZATION_STEPS.value,
      _train_bindings(_SUMMARIZATION_BATCH_SIZE.value, 1.0, 50))
  rouge = part.run('evaluate', 'runs/eval.gin',
                   _eval_bindings(part, _EVAL_EXAMPLES.value))[
                       SUMMARIZATION_TASK]
  lead = baselines.lead_summaries(seqio.get_mixture_or_task(SUMMARIZATION_TASK),
                                  'validation', lengths, _EVAL_EXAMPLES.value)
  examples = _evaluated_examples(os.path.join(part.dir, 'eval'),
                                 SUMMARIZATION_TASK, count=3)
  export_dir = os.path.join(part.dir, 'export')
  part.run('export', 'runs/export.gin', part.checkpoint_bindings(
      with_task=False) + [
      f"EXPORT_OUTPUT_DIR = '{export_dir}'"])
  return part, {
      'task': SUMMARIZATION_TASK,
      'metric': 'rouge1 (validation, F x 100, higher is better)',
      'model': round(rouge['rouge1'], 2),
      'baseline': round(lead['rouge1'], 2),
      'baseline_name': (f'lead: the input\'s first {lengths["targets"] - 1} '
                        'bytes'),
      'rouge': {k: round(v, 2) for k, v in sorted(rouge.items())},
      'baseline_rouge': {k: round(v, 2) for k, v in sorted(lead.items())},
      'train_steps': int(result.state.step),
      'final_train_loss': _final_loss(result),
      'train_seconds': round(train_seconds, 1),
      'reused_run': result.start_step >= _SUMMARIZATION_STEPS.value,
      'examples': examples,
      'export_dir': export_dir,
  }


def _timed(part_fn, workdir):
  """part_fn(workdir), its summary with the wall and CPU seconds it took."""
  start, start_cpu = time.time(), time.process_time()
  part, summary = part_fn(workdir)
  summary['seconds'] = round(time.time() - start, 1)
  # CPU time of this process: what it costs when the machine is shared.
  summary['cpu_seconds'] = round(time.process_time() - start_cpu, 1)
  return part, summary


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from fovea_jax.runs import entry_points
  entry_points.show_own_info_logs()
  workdir = os.path.abspath(_WORKDIR.value)
  if _FRESH.value:
    for name in ('language_model', 'summarization'):
      if os.path.isdir(os.path.join(workdir, name)):
        print(f'--fresh: deleting {os.path.join(workdir, name)}', flush=True)
        shutil.rmtree(os.path.join(workdir, name))
  os.makedirs(workdir, exist_ok=True)
  start, start_cpu = time.time(), time.process_time()
  lm_part, lm = _timed(language_model, workdir)
  summ_part, summ = _timed(summarization, workdir)
  summary = {
      'language_model': lm,
      'summarization': summ,
      'total_seconds': round(time.time() - start, 1),
      'total_cpu_seconds': round(time.process_time() - start_cpu, 1),
  }
  summary_path = os.path.join(workdir, 'quickstart_summary.json')
  with open(summary_path, 'w') as f:
    json.dump(summary, f, indent=2)
  lines = [
      '',
      f'fovea_jax quickstart finished in {summary["total_seconds"] / 60:.1f} '
      f'min ({summary["total_cpu_seconds"] / 60:.1f} CPU min).',
      '',
      f'1. Language model ({lm["task"]}, decoder-only, causal fovea attention, '
      f'{lm["train_steps"]} steps{", reused" if lm["reused_run"] else ""}):',
      f'   validation bits per byte {lm["model"]:.3f} vs {lm["baseline"]:.3f} '
      f'for the unigram baseline ({lm["baseline_name"]}): '
      f'{_verdict(lm["baseline"] - lm["model"], "bits per byte")}.',
      '',
      f'2. Summarization ({summ["task"]}, fovea LongT5, {summ["train_steps"]} '
      f'steps{", reused" if summ["reused_run"] else ""}):',
      f'   validation ROUGE-1 {summ["model"]:.2f} vs {summ["baseline"]:.2f} for '
      f'the lead baseline ({summ["baseline_name"]}): '
      f'{_verdict(summ["model"] - summ["baseline"], "ROUGE-1")}.',
      *([] if summ['model'] > summ['baseline'] else [
          '   A model this small, trained this briefly, does not learn to '
          'summarize here; this part shows train -> ROUGE -> export (README, '
          'Quickstart).']),
      '   Three validation examples (the end of the input), the summary the '
      'model wrote and the real one:',
  ]
  for i, row in enumerate(summ['examples'], 1):
    lines += [f'   [{i}] input:      {_short(row["input"])}',
              f'       model:      {_short(row["prediction"])}',
              f'       real:       {_short(row["target"])}']
  lines += [
      '',
      f'  language model run, evaluation, continuations: {lm_part.dir}',
      f'  summarization run, evaluation, export:         {summ_part.dir}',
      f'  summary:                                       {summary_path}',
      '',
      'The same steps from the command line:',
      *('  ' + c for c in lm_part.commands + summ_part.commands),
  ]
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)

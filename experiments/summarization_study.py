"""The summarization study: encoder attention schemes, and fovea's switch recipe.

  python -m experiments.run_study --config=experiments/summarization_study.py
  python -m experiments.run_study --config=experiments/summarization_study.py:quick

Rows train sizes/tiny.gin (a byte-level LongT5-style encoder-decoder) with an
attention/*.gin file on `stdlib_summarization` (module source -> its docstring's
first paragraph): same data, steps, seed and optimizer. Then the Fovea paper's
recipe in miniature: warm-start from the trained TGlobal row, switch the encoder
to fovea and fine-tune (runs/finetune.gin), against continuing TGlobal for the
same number of steps from the same checkpoint.
"""
import ml_collections


def _row(name, attention, init_from='', extra_steps=0, label=None):
  return dict(name=name, attention=attention, bindings=[], seed=0,
              label=label or name, init_from=init_from, extra_steps=extra_steps)


def rows(switch_steps):
  return [
      _row('dense', 'attention/dense.gin'),
      _row('longt5_local', 'attention/longt5_local.gin'),
      _row('longt5_tglobal', 'attention/longt5_tglobal.gin'),
      _row('fovea', 'attention/fovea.gin'),
      _row('fma', 'attention/fma.gin'),
      _row('tglobal_then_fovea', 'attention/fovea.gin',
           init_from='longt5_tglobal', extra_steps=switch_steps),
      _row('tglobal_continued', 'attention/longt5_tglobal.gin',
           init_from='longt5_tglobal', extra_steps=switch_steps),
  ]


def get_config(arg: str = 'full') -> ml_collections.ConfigDict:
  if arg not in ('full', 'quick'):
    raise ValueError(
        f"summarization_study config takes 'full' or 'quick', got {arg!r}.")
  c = ml_collections.ConfigDict()
  c.study = 'summarization'
  c.mode = arg
  c.task = 'stdlib_summarization'
  c.causal = False
  c.model_gin = 'sizes/tiny.gin'
  c.num_layers = 2
  c.length_feature = 'inputs'
  c.seed = 0
  c.optimizer_bindings = [
      "lr_schedules.create_learning_rate_scheduler.factors = 'constant'",
      'lr_schedules.create_learning_rate_scheduler.base_learning_rate = 0.01',
  ]
  # Greedy decoding for ROUGE (beam 1), and no dropout in these short runs.
  c.model_bindings = ['BEAM_SIZE = 1', 'DROPOUT_RATE = 0.0']
  if arg == 'full':
    c.feature_lengths = {'inputs': 4096, 'targets': 128}
    c.train_steps = 16
    c.batch_size = 1
    c.eval_examples = 12
    c.eval_batch_size = 6
    c.position_bins = (0, 32, 64, 128)
    c.isolate_rows = False
    c.rows = rows(switch_steps=8)
  else:
    c.feature_lengths = {'inputs': 256, 'targets': 16}
    c.train_steps = 2
    c.batch_size = 1
    c.eval_examples = 1
    c.eval_batch_size = 1
    c.position_bins = (0, 8, 16)
    c.isolate_rows = False
    c.rows = [r for r in rows(switch_steps=1)
              if r['name'] in ('longt5_tglobal', 'tglobal_then_fovea')]
  return c

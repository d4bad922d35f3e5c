"""The summarization study: encoder attention schemes, and fovea's switch recipe.

  python -m experiments.run_study --config=experiments/summarization_study.py
  python -m experiments.run_study --config=experiments/summarization_study.py:quick

Rows train experiments/gin/summarization_small.gin (sizes/tiny.gin's byte-level
LongT5-style encoder-decoder with 2 heads) with an
attention/*.gin file (or, for options other than a scheme's defaults, the row's
own file under experiments/gin/summarization_study/) on `stdlib_summarization`
(module source -> its docstring's first paragraph): same data, steps, seed and
optimizer. Then the Fovea paper's
recipe in miniature: warm-start from the trained TGlobal row, switch the encoder
to fovea and fine-tune (runs/finetune.gin), against continuing TGlobal for the
same number of steps from the same checkpoint.
"""
import ml_collections

from experiments import study_config


def _row(name, attention, init_from='', extra_steps=0):
  return study_config.row(name, attention, init_from=init_from,
                          extra_steps=extra_steps)


def rows(switch_steps):
  # TGlobal and the switch recipe first, so a study stopped early still
  # answers the Fovea paper's question.
  return [
      _row('longt5_tglobal', 'attention/longt5_tglobal.gin'),
      _row('tglobal_then_fovea', 'attention/fovea.gin',
           init_from='longt5_tglobal', extra_steps=switch_steps),
      _row('tglobal_continued', 'attention/longt5_tglobal.gin',
           init_from='longt5_tglobal', extra_steps=switch_steps),
      _row('fovea', 'attention/fovea.gin'),
      _row('dense', 'attention/dense.gin'),
      _row('longt5_local', 'attention/longt5_local.gin'),
      _row('fma', 'experiments/gin/summarization_study/fma_learned.gin'),
  ]


def get_config(arg: str = 'full') -> ml_collections.ConfigDict:
  c = study_config.base_config(
      'summarization', arg, task='stdlib_summarization', causal=False,
      model_gin='experiments/gin/summarization_small.gin', num_layers=2, length_feature='inputs')
  # Greedy decoding for ROUGE (beam 1), and no dropout in these short runs.
  c.model_bindings = ['BEAM_SIZE = 1', 'DROPOUT_RATE = 0.0']
  if arg == 'full':
    c.feature_lengths = {'inputs': 4096, 'targets': 128}
    c.train_steps = 24
    c.eval_examples = 12
    c.eval_batch_size = 6
    c.position_bins = (0, 32, 64, 128)
    c.rows = rows(switch_steps=12)
  else:
    c.feature_lengths = {'inputs': 256, 'targets': 16}
    c.train_steps = 2
    c.eval_examples = 1
    c.eval_batch_size = 1
    c.position_bins = (0, 8, 16)
    c.rows = [r for r in rows(switch_steps=1)
              if r['name'] in ('longt5_tglobal', 'tglobal_then_fovea')]
  return c

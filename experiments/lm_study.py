"""The language-modelling study: dense, sliding window and fovea on a byte LM.

  python -m experiments.run_study --config=experiments/lm_study.py        # full
  python -m experiments.run_study --config=experiments/lm_study.py:quick  # smoke

Each row trains `python -m fovea_jax.train`'s gin files (the study's model file,
an attention gin file, runs/pretrain.gin) on `stdlib_lm` with the same data,
steps and optimizer, three seeds per scheme; only the attention and the seed
change. Local scales are 32 tokens, as in the diagnostic study (the same gin
files): a sliding window of 31 each side, fovea blocks of 32. Besides bits per
byte and loss by position, evaluation reports the loss on tokens that repeat
text seen earlier, binned by how far back (experiments/evaluate_by_position.py):
beyond 32 bytes a sliding window cannot copy.
"""
import ml_collections

from experiments import study_config

SCHEMES = (
    ('dense', 'attention/dense.gin'),
    ('sliding', 'experiments/gin/diagnostic/sliding.gin'),
    ('fovea', 'experiments/gin/diagnostic/fovea.gin'),
)
SEEDS = (0, 1, 2)


def rows(schemes=SCHEMES, seeds=SEEDS):
  return [study_config.row(f'{name}_seed{seed}', gin_file, seed=seed,
                           label=name)
          for seed in seeds for name, gin_file in schemes]


def get_config(arg: str = 'full') -> ml_collections.ConfigDict:
  c = study_config.base_config(
      'lm', arg, task='stdlib_lm', causal=True,
      model_gin='experiments/gin/lm_small.gin', num_layers=3,
      length_feature='targets')
  if arg == 'full':
    c.feature_lengths = {'targets': 256}
    c.batch_size = 4
    c.train_steps = 1000
    c.eval_examples = 128
    c.eval_batch_size = 16
    c.position_bins = (0, 32, 128, 256)
    c.repeat_bins = (0, 32, 128, 256)
    c.rows = rows()
    c.parallel_rows = 2
  else:
    c.feature_lengths = {'targets': 256}
    c.train_steps = 2
    c.eval_examples = 1
    c.eval_batch_size = 1
    c.position_bins = (0, 64, 128, 256)
    c.repeat_bins = (0, 32, 256)
    c.rows = rows(seeds=(0,))[:2]
    c.parallel_rows = 1
  return c

"""The diagnostic study: which schemes answer questions about distant text.

  python -m experiments.run_study --config=experiments/diagnostic_study.py
  python -m experiments.run_study --config=experiments/diagnostic_study.py:quick

Every row trains one small byte-level decoder-only LM
(experiments/gin/diagnostic_model.gin) on `diagnostic_mixture` (associative
recall, fact retrieval, frequent symbol; fovea_jax/tasks/diagnostic_sources.py)
with the same data, optimizer and steps; only the attention and the seed
change. Evaluation is `python -m fovea_jax.eval`'s: teacher-forced answer
accuracy per task and per distance bin (`metrics.answer_accuracy`).

All local scales are 32 tokens, an eighth of the 256-token examples, so
that most answers lie beyond them: a sliding window of 31 tokens each side,
blocks of 32 (block local, fovea), FMA's fine level of 32, TGlobal's local
radius of 31 (global tokens summarise blocks of 16). MASFormer has full
attention in the bottom layer and the sliding window above.
"""
import ml_collections

from experiments import study_config

SCHEMES = (
    ('dense', 'attention/dense.gin'),
    ('sliding', 'experiments/gin/diagnostic/sliding.gin'),
    ('block_local', 'experiments/gin/diagnostic/block_local.gin'),
    ('masformer_bottom1', 'experiments/gin/diagnostic/masformer_bottom1.gin'),
    ('fovea', 'experiments/gin/diagnostic/fovea.gin'),
    ('fma_avg', 'experiments/gin/diagnostic/fma_avg.gin'),
    ('fma_learned', 'experiments/gin/diagnostic/fma_learned.gin'),
    ('longt5_tglobal', 'experiments/gin/diagnostic/tglobal.gin'),
)
SEEDS = (0, 1, 2)
# The scale below which every local scheme sees everything (see above).
LOCAL_SCALE = 32


def rows(schemes=SCHEMES, seeds=SEEDS):
  # Seed-major: the two controls (dense, sliding) with all seeds come first,
  # so a study stopped early still says whether it separates them.
  controls = [s for s in schemes if s[0] in ('dense', 'sliding')]
  rest = [s for s in schemes if s not in controls]
  out = []
  for group in (controls, rest):
    for seed in seeds:
      for name, gin_file in group:
        out.append(study_config.row(f'{name}_seed{seed}', gin_file, seed=seed,
                                    label=name))
  return out


def get_config(arg: str = 'full') -> ml_collections.ConfigDict:
  c = study_config.base_config(
      'diagnostic', arg, task='diagnostic_mixture', causal=True,
      model_gin='experiments/gin/diagnostic_model.gin', num_layers=2,
      length_feature='targets',
      # Adafactor at 0.05 after a 300-step warmup (at a constant 0.01, before
      # the model had smeared keys, dense attention had not formed its lookup
      # after 3,000 steps).
      learning_rate=0.05, warmup_steps=300)
  c.local_scale = LOCAL_SCALE
  # "Beyond the window" starts at twice the local scale: a frequent-symbol
  # answer's distance is to the centre of its region, which reaches 12 tokens
  # either side at 256 tokens, so at 32-64 a window still sees part of it.
  c.beyond = 2 * LOCAL_SCALE
  c.controls = ('dense', 'sliding')
  if arg == 'full':
    c.feature_lengths = {'targets': 256}
    c.batch_size = 8
    c.train_steps = 2000
    c.eval_examples = 64
    c.eval_batch_size = 32
    c.position_bins = (0, 32, 128, 256)
    c.rows = rows()
    c.parallel_rows = 2
  else:
    c.feature_lengths = {'targets': 128}
    c.batch_size = 2
    c.train_steps = 2
    c.eval_examples = 4
    c.eval_batch_size = 2
    c.position_bins = (0, 32, 128)
    c.rows = rows(schemes=SCHEMES[:2] + SCHEMES[4:5], seeds=(0,))
    c.parallel_rows = 1
  return c

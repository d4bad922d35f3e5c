"""The language-modelling study: every attention scheme on one small byte LM.

  python -m experiments.run_study --config=experiments/lm_study.py        # full
  python -m experiments.run_study --config=experiments/lm_study.py:quick  # smoke

Each row trains `python -m fovea_jax.train`'s gin files (the study's model file,
an attention/*.gin file, runs/pretrain.gin) on `stdlib_lm` with the same data,
steps, seed and optimizer; only the attention (and the seed, for the noise rows)
changes; a row's options are its own gin file under experiments/gin/lm_study/.
Local windows are 127 tokens back (LongT5's radius) or blocks of 128,
fovea blocks are 128 (wing 1), FMA's fine level is 128 tokens.
"""
import ml_collections

from experiments import study_config

_row = study_config.row


def rows():
  study = 'experiments/gin/lm_study'
  # Order: the rows that answer each paper's question first (dense, fovea,
  # MASFormer, sliding), then the noise seeds and the rest; a study stopped
  # early still compares something.
  return [
      _row('dense', 'attention/dense.gin'),
      _row('fovea', 'attention/fovea.gin'),
      _row('masformer_bottom1', f'{study}/masformer_bottom1.gin'),
      _row('sliding', 'attention/longt5_local.gin'),
      _row('fma_learned', f'{study}/fma_learned.gin'),
      _row('longt5_tglobal', 'attention/longt5_tglobal.gin'),
      _row('dense_seed1', 'attention/dense.gin', seed=1, label='dense'),
      _row('fovea_seed1', 'attention/fovea.gin', seed=1, label='fovea'),
      _row('fma_avg', f'{study}/fma_avg.gin'),
      _row('block_local', f'{study}/block_local.gin'),
      _row('masformer_bottom2', f'{study}/masformer_bottom2.gin'),
  ]


def get_config(arg: str = 'full') -> ml_collections.ConfigDict:
  c = study_config.base_config(
      'lm', arg, task='stdlib_lm', causal=True,
      model_gin='experiments/gin/lm_small.gin', num_layers=3,
      length_feature='targets')
  c.rows = rows()
  if arg == 'full':
    c.feature_lengths = {'targets': 4096}
    # Sized for 2 CPU cores: dense attention at 4,096 bytes took 5-24 s a step
    # (3 layers) depending on the load, and both studies together finish in
    # under an hour; results/lm_study.* is this config's run (1,523 s).
    c.train_steps = 32
    c.eval_examples = 8
    c.eval_batch_size = 4
    c.position_bins = (0, 256, 1024, 2048, 4096)
  else:
    c.feature_lengths = {'targets': 256}
    c.train_steps = 2
    c.eval_examples = 1
    c.eval_batch_size = 1
    c.position_bins = (0, 64, 128, 256)
    keep = ('dense', 'fovea', 'masformer_bottom1')
    c.rows = [r for r in c.rows if r['name'] in keep]
  return c

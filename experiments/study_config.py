"""What every study config shares: its fields, the row format, the optimizer.

A study config (`experiments/<study>.py`, `get_config(arg)`) is a ConfigDict
with the task and model, the run sizes (`train_steps`, `batch_size`,
`feature_lengths`, `eval_examples`, `position_bins`, `repeat_bins`,
`parallel_rows`) and `rows`: one dict per
run, `{name, attention (gin file), bindings, seed, label (rows with one label
are seeds of one setting), init_from (a row to warm-start from), extra_steps}`.
"""
import ml_collections

MODES = ('full', 'quick')


def row(name, attention, *, seed=0, label=None, init_from='', extra_steps=0):
  return dict(name=name, attention=attention, bindings=[], seed=seed,
              label=label or name, init_from=init_from, extra_steps=extra_steps)


def base_config(study: str, mode: str, *, task: str, causal: bool,
                model_gin: str, num_layers: int,
                length_feature: str,
                learning_rate: float = 0.01,
                warmup_steps: int = 0) -> ml_collections.ConfigDict:
  if mode not in MODES:
    raise ValueError(f'{study} study config takes one of {MODES} after the '
                     f"file name (e.g. ':quick'), got {mode!r}.")
  c = ml_collections.ConfigDict()
  c.study = study
  c.mode = mode
  c.task = task
  c.causal = causal
  c.model_gin = model_gin
  c.num_layers = num_layers
  c.length_feature = length_feature
  c.seed = 0
  c.batch_size = 1
  # Adafactor as in runs/pretrain.gin, at a constant rate for these short runs
  # (after a linear warmup of `warmup_steps`, if any). A tuple, so that
  # --config.optimizer_bindings='(...)' can replace it.
  factors = 'constant * linear_warmup' if warmup_steps else 'constant'
  c.optimizer_bindings = (
      f"lr_schedules.create_learning_rate_scheduler.factors = '{factors}'",
      'lr_schedules.create_learning_rate_scheduler.base_learning_rate = '
      f'{learning_rate}',
  ) + ((f'lr_schedules.create_learning_rate_scheduler.warmup_steps = '
        f'{warmup_steps}',) if warmup_steps else ())
  c.model_bindings = ()
  # One example per row: the study tasks fill their rows (the diagnostics
  # exactly, LM chunks nearly), and step times then carry no packing masks.
  c.packing = False
  # Rows run in the runner's process; True gives each its own process.
  c.isolate_rows = False
  # Rows run at once, each in its own process on its own CPU core (rows must
  # not warm-start from each other).
  c.parallel_rows = 1
  # Loss of repeated text by the distance of the repetition (evaluate_by_position).
  c.repeat_bins = (0, 32, 128, 512, 4096)
  return c


def row_process_flags(argv) -> list:
  """The --config flag and its --config.<field>=<value> overrides: a row run in
  its own process must build the same config as the runner."""
  out = []
  for i, arg in enumerate(argv):
    if arg == '--config' or (arg.startswith('--config.') and '=' not in arg):
      out.append(f'{arg}={argv[i + 1]}')
    elif arg.startswith('--config=') or arg.startswith('--config.'):
      out.append(arg)
  if not any(a.startswith('--config=') for a in out):
    raise ValueError('--config is required, e.g. '
                     '--config=experiments/lm_study.py:quick.')
  return out

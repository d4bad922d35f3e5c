"""A training progress bar: steps done, step rate, ETA, latest loss.

tqdm on stderr (rate and ETA come from it), shown by process 0 only, only when
stderr is a terminal (a redirected log gets train_loop's plain stats lines
instead of carriage-return updates), and never when `enabled` is False.
"""
import sys

import jax
import tqdm


class ProgressBar:

  def __init__(self, total_steps: int, start_step: int = 0, enabled: bool = True):
    self._bar = tqdm.tqdm(
        total=total_steps, initial=start_step, unit='step', dynamic_ncols=True,
        file=sys.stderr, desc='train',
        disable=(not enabled or jax.process_index() != 0 or
                 not sys.stderr.isatty()))

  def update(self, step: int, metrics: dict):
    self._bar.n = step
    self._bar.set_postfix(
        {k: f'{float(metrics[k]):.4g}' for k in ('loss', 'learning_rate')
         if k in metrics}, refresh=False)
    self._bar.refresh()

  def close(self):
    self._bar.close()

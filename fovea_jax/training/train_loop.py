"""The training loop: restore or initialise, step, log, save, stop cleanly.

Library code behind `python -m fovea_jax.train`, independent of gin and of any
particular model or dataset:
- resumes from the newest checkpoint in `model_dir` (same step, same data
  position, same dropout keys, so the continued run is bit-identical to an
  uninterrupted one), else warm-starts params from `initial_restore`, else starts
  from scratch;
- saves every `SaveCheckpointConfig.period` steps (asynchronously), at the end, and
  on SIGTERM (then returns normally);
- stops on a non-finite loss without saving the bad state, naming the step and the
  last good checkpoint.
The data iterator yields this process's rows as dicts of numpy arrays; if it has
`get_state()` / `restore(state)` (fovea_jax.data.DataIterator) its position is saved in the checkpoint,
otherwise a restart skips the batches already consumed.
"""
import dataclasses
import json
import logging
import math
import signal
import time
from typing import Any, Callable, Iterator, Optional

import jax
from jax.experimental import multihost_utils
import numpy as np

from fovea_jax.training import checkpoints
from fovea_jax.training import metrics_writers
from fovea_jax.training import progress
from fovea_jax.training import trainer as trainer_lib


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or infinite loss."""


@dataclasses.dataclass
class LoopResult:
  state: trainer_lib.TrainState
  start_step: int             # Step the run resumed from (0 for a fresh start).
  stopped_by_signal: bool
  last_metrics: dict


def log_stats(step: int, total_steps: int, metrics: dict) -> None:
  """The plain line a person reads in the log every `log_period` steps."""
  if jax.process_index() != 0:
    return
  logging.info('step %d/%d: loss %.4f, accuracy %.4f, %.0f tokens/s, '
               'learning rate %.3g', step, total_steps, float(metrics['loss']),
               float(metrics['accuracy']), float(metrics['tokens_per_second']),
               float(metrics['learning_rate']))


class _SigtermFlag:
  """Records SIGTERM instead of dying, so the loop can save first."""

  def __init__(self):
    self.raised = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread: leave signals alone.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint, then stopping.')
    self.raised = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def any_process(self) -> bool:
    # Every process must agree, or the collective save would hang.
    if jax.process_count() == 1:
      return self.raised
    return bool(np.any(multihost_utils.process_allgather(np.array(self.raised))))


def restore_or_init(trainer: trainer_lib.Trainer,
                    init_variables_fn: Callable[[jax.Array], Any],
                    model_dir: str,
                    seed: int,
                    initial_restore: Optional[checkpoints.RestoreCheckpointConfig]
                    ) -> tuple[trainer_lib.TrainState, dict]:
  """(state, checkpoint meta): the run's own latest, a warm start, or fresh."""
  layout = trainer.state_layout(init_variables_fn)
  state, meta = checkpoints.restore(
      checkpoints.latest_in(model_dir, fallback_to_scratch=True),
      layout.abstract)
  if state is not None:
    logging.info('Resuming from %s at step %d.', model_dir, meta['step'])
    return state, meta
  if initial_restore is not None and initial_restore.path:
    state, meta = checkpoints.restore(initial_restore, layout.abstract)
    if state is not None:
      logging.info('Warm start from %s.', initial_restore.path)
      if state.opt_state is None:
        return trainer.state_from_params(state.params, layout), {}
      return state, {}
  return trainer.init_state(init_variables_fn, jax.random.PRNGKey(seed)), {}


def _gather_json(value) -> list:
  """`value` from every process, in process order (JSON through a collective)."""
  if jax.process_count() == 1:
    return [value]
  data = json.dumps(value).encode()
  length = multihost_utils.process_allgather(np.array(len(data)))
  buffer = np.zeros(int(np.max(length)), np.uint8)
  buffer[:len(data)] = np.frombuffer(data, np.uint8)
  gathered = multihost_utils.process_allgather(buffer)
  return [json.loads(bytes(row[:n]).decode()) for row, n in zip(gathered, length)]


def _position_data(batches: Iterator, meta: dict, step: int):
  # Each process reads its own shard, so each saved its own position.
  positions = meta.get('dataset') or {}
  if str(jax.process_index()) in positions and hasattr(batches, 'restore'):
    batches.restore(positions[str(jax.process_index())])
    return
  for _ in range(step):  # Deterministic pipeline: replay to the same position.
    next(batches)


def run(trainer: trainer_lib.Trainer,
        init_variables_fn: Callable[[jax.Array], Any],
        batches: Iterator[dict],
        *,
        total_steps: int,
        model_dir: str,
        save_config: checkpoints.SaveCheckpointConfig,
        initial_restore: Optional[checkpoints.RestoreCheckpointConfig] = None,
        seed: int = 0,
        log_period: int = 10,
        show_progress: bool = True,
        step_callback: Optional[Callable[[int, trainer_lib.TrainState], None]]
        = None) -> LoopResult:
  """Trains until `total_steps` (a global step count, as in T5X)."""
  state, meta = restore_or_init(trainer, init_variables_fn, model_dir, seed,
                                initial_restore)
  start_step = int(jax.device_get(state.step))
  _position_data(batches, meta, start_step)
  manager = checkpoints.CheckpointManager(model_dir, save_config)
  writer = metrics_writers.MetricsWriter(model_dir)
  bar = progress.ProgressBar(total_steps, start_step, enabled=show_progress)
  dropout_rng = jax.random.PRNGKey(seed + 1)
  step, metrics, stopped = start_step, {}, False
  tokens, window_start, window_steps = 0.0, time.perf_counter(), 0

  def save():
    meta = {}
    if save_config.save_dataset and hasattr(batches, 'get_state'):
      meta['dataset'] = {str(i): position for i, position in
                         enumerate(_gather_json(batches.get_state()))}
    manager.save(state, meta=meta)

  try:
    with _SigtermFlag() as sigterm:
      while step < total_steps:
        batch = trainer.partitioner.global_batch(next(batches))
        new_state, step_metrics = trainer.train_step(state, batch, dropout_rng)
        metrics = jax.device_get(step_metrics)
        loss = float(metrics['loss'])
        if not math.isfinite(loss):
          manager.wait_until_finished()
          last = manager.latest_step()
          raise NonFiniteLossError(
              f'Loss is {loss} at step {step + 1} (the update from step {step}); '
              'stopped without saving it. Last good checkpoint: '
              f'{checkpoints.step_dir(model_dir, last) if last is not None else "none"}.'
              ' Lower the learning rate or check the data, then restart.')
        state, step = new_state, step + 1
        tokens += float(metrics['num_tokens'])
        window_steps += 1
        if step_callback is not None:
          step_callback(step, state)
        if step % log_period == 0 or step == total_steps:
          elapsed = max(time.perf_counter() - window_start, 1e-9)
          metrics['tokens_per_second'] = tokens * jax.process_count() / elapsed
          metrics['steps_per_second'] = window_steps / elapsed
          writer.write(step, metrics)
          log_stats(step, total_steps, metrics)
          tokens, window_start, window_steps = 0.0, time.perf_counter(), 0
        bar.update(step, metrics)
        if manager.should_save(step) or step == total_steps:
          save()
        if sigterm.any_process():
          save()
          stopped = True
          break
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.close()
    bar.close()
  return LoopResult(state=state, start_step=start_step, stopped_by_signal=stopped,
                    last_metrics=metrics)

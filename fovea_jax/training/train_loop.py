"""The training loop: restore or initialise, step, log, save, stop cleanly.

Library code behind `python -m fovea_jax.train`, independent of gin and of any
particular model or dataset:
- resumes from the newest readable checkpoint in `model_dir` (same step, same
  data position, same dropout keys, so the continued run is bit-identical to an
  uninterrupted one; damaged newer ones are moved to `unreadable/`, see
  `checkpoints.resume`), else warm-starts params from `initial_restore`, else
  starts from scratch. A checkpoint of another model or optimizer is an error;
- saves every `SaveCheckpointConfig.period` steps (asynchronously), at the end, and
  on SIGTERM (then returns normally), each with the model's fingerprint and the
  run's `run_info` (its gin config); TensorBoard events under `train/` are
  flushed at every save and at exit;
- stops on divergence without saving the bad state, naming the step and the
  last good checkpoint: a non-finite loss or gradient norm, or a gradient norm
  of exactly 0 with a positive loss (a collapse: no parameter can move again,
  what Adafactor does at an absurd learning rate).
The data iterator yields this process's rows as dicts of numpy arrays; if it has
`get_state()` / `restore(state)` (fovea_jax.data.DataIterator) its position is saved in the checkpoint,
otherwise a restart skips the batches already consumed.
"""
import dataclasses
import hashlib
import json
import logging
import math
import os
import signal
import time
from typing import Any, Callable, Iterator, Optional

import jax
from jax.experimental import multihost_utils
import numpy as np

from fovea_jax.training import checkpoints
from fovea_jax.training import fingerprint as fingerprint_lib
from fovea_jax.training import metrics_writers
from fovea_jax.training import progress
from fovea_jax.training import trainer as trainer_lib


class DivergenceError(FloatingPointError):
  """Training diverged; the bad state was not saved."""


class NonFiniteLossError(DivergenceError):
  """Training produced a NaN or infinite loss or gradient norm."""


class CollapseError(DivergenceError):
  """The gradient vanished exactly while the loss is positive."""


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


def run_identity(trainer: trainer_lib.Trainer,
                 layout: trainer_lib.StateLayout) -> dict:
  """What every checkpoint of this run records and every resume compares: the
  model's fingerprint and the optimizer (its name and its state's structure)."""
  structure = str(jax.tree.structure(layout.abstract.opt_state))
  return {'model': fingerprint_lib.fingerprint(trainer.model),
          'optimizer': {'name': trainer.optimizer_name,
                        'state': hashlib.sha256(structure.encode()).hexdigest()[
                            :16]}}


def _compatibility_check(identity: dict):
  """`check(meta, path)` for `checkpoints.resume`: the model dir's checkpoints
  must be of this model and optimizer; anything else is the user's to fix."""

  def check(meta: dict, path: str):
    fingerprint_lib.check(
        meta.get('model'), identity['model'], path, allow_mismatch=False,
        override=('nothing here: resume with the model it was trained as, or '
                  'start a new MODEL_DIR warm-started from it with '
                  'RestoreCheckpointConfig.allow_model_mismatch = True'))
    saved = meta.get('optimizer')
    current = identity['optimizer']
    if saved and saved.get('state') != current['state']:
      raise checkpoints.CheckpointError(
          f'{path} holds the state of optimizer {saved.get("name")!r}, but '
          f'this run uses {current["name"]!r}'
          + (' with different options' if saved.get('name') == current['name']
             else '') +
          ': its optimizer state cannot be resumed, and nothing in the model '
          f'dir was changed. Fix: resume with Trainer.optimizer = '
          f'@{saved.get("name")} (and its options), or train in a new '
          'MODEL_DIR warm-started from these params (CheckpointConfig.restore '
          '= @RestoreCheckpointConfig(), RestoreCheckpointConfig.path = this '
          'checkpoint, RestoreCheckpointConfig.strict = False).')

  return check


def restore_or_init(trainer: trainer_lib.Trainer,
                    init_variables_fn: Callable[[jax.Array], Any],
                    model_dir: str,
                    seed: int,
                    initial_restore: Optional[checkpoints.RestoreCheckpointConfig]
                    ) -> tuple[trainer_lib.TrainState, dict, dict]:
  """(state, checkpoint meta, run identity): the run's own newest readable
  checkpoint, a warm start, or fresh. `initial_restore.fallback_to_scratch`
  also lets a model dir whose checkpoints are all unreadable start afresh
  (they are moved aside)."""
  layout = trainer.state_layout(init_variables_fn)
  identity = run_identity(trainer, layout)
  fallback = bool(initial_restore and initial_restore.fallback_to_scratch)
  state, meta = checkpoints.resume(model_dir, layout.abstract,
                                   _compatibility_check(identity),
                                   fallback_to_scratch=fallback)
  if state is not None:
    logging.info('Resuming from %s at step %d.', model_dir, meta['step'])
    return state, meta, identity
  if initial_restore is not None and initial_restore.path:
    state, meta = checkpoints.restore(initial_restore, layout.abstract,
                                      identity['model'])
    if state is not None:
      logging.info('Warm start from %s.', initial_restore.path)
      if state.opt_state is None:
        return trainer.state_from_params(state.params, layout), {}, identity
      return state, {}, identity
  logging.info('Starting from scratch in %s (it holds no checkpoint).',
               model_dir)
  return (trainer.init_state(init_variables_fn, jax.random.PRNGKey(seed)), {},
          identity)


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


def _divergence(metrics: dict, step: int):
  """(error class, message) when this step's metrics show divergence."""
  loss, grad_norm = float(metrics['loss']), float(metrics['grad_norm'])
  where = f'at step {step + 1} (the update from step {step})'
  if not math.isfinite(loss):
    return NonFiniteLossError, f'Loss is {loss} {where}'
  if not math.isfinite(grad_norm):
    return NonFiniteLossError, f'Gradient norm is {grad_norm} {where}'
  # An exactly zero gradient of a positive loss means every parameter's
  # gradient underflowed or saturated: no update can change the model again.
  if grad_norm == 0.0 and loss > 0.0:
    return CollapseError, (
        f'Training collapsed {where}: gradient norm is exactly 0 while the '
        f'loss is {loss:.4g} (accuracy '
        f'{float(metrics.get("accuracy", float("nan"))):.3g}), so no '
        'parameter can change any more')
  return None


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
        = None,
        run_info: Optional[dict] = None) -> LoopResult:
  """Trains until `total_steps` (a global step count, as in T5X). `run_info`
  (e.g. the operative gin config) is stored in every checkpoint's meta."""
  state, meta, identity = restore_or_init(trainer, init_variables_fn,
                                          model_dir, seed, initial_restore)
  start_step = int(jax.device_get(state.step))
  _position_data(batches, meta, start_step)
  manager = checkpoints.CheckpointManager(model_dir, save_config,
                                          dict(run_info or {}, **identity))
  writer = metrics_writers.MetricsWriter(
      model_dir, events_dir=os.path.join(model_dir, 'train'))
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
    writer.flush()

  try:
    with _SigtermFlag() as sigterm:
      while step < total_steps:
        batch = trainer.partitioner.global_batch(next(batches))
        new_state, step_metrics = trainer.train_step(state, batch, dropout_rng)
        metrics = jax.device_get(step_metrics)
        divergence = _divergence(metrics, step)
        if divergence is not None:
          manager.wait_until_finished()
          last = manager.latest_step()
          error, text = divergence
          raise error(
              f'{text}; stopped without saving it. Last good checkpoint: '
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

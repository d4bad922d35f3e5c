"""Orbax checkpoints in T5X's vocabulary: save and restore configs, one manager.

A checkpoint directory `<model_dir>/checkpoint_<step>/` holds three items:
`params`, `opt_state` (orbax StandardSave, each leaf in its shards) and `meta`
(JSON: step, the model's fingerprint and operative gin config, the optimizer,
and, when asked, the data iterator's position). Params are a separate item so a
warm start or an exported params-only checkpoint restores them alone. Restores
target abstract arrays carrying the *current* mesh's shardings, so a checkpoint
written on one mesh reads back onto any other.

Nothing here deletes work it cannot read: `resume` skips a damaged newest
checkpoint for the newest readable one and moves the damaged one to
`<model_dir>/unreadable/`; when none is readable it raises with the fix.
"""
import dataclasses
import logging
import os
import re
import time
from typing import Any, Callable, Optional, Sequence

import gin
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from fovea_jax.sharding import partitioner as partitioner_lib
from fovea_jax.training import fingerprint as fingerprint_lib
from fovea_jax.training.trainer import TrainState

PyTree = Any
STEP_PREFIX = 'checkpoint'
_STEP_DIR = re.compile(rf'^{STEP_PREFIX}_(\d+)$')
UNREADABLE_DIR = 'unreadable'  # Where resume moves checkpoints it cannot read.


class CheckpointError(RuntimeError):
  """A checkpoint that was asked for is missing or unreadable."""


@gin.configurable
@dataclasses.dataclass
class SaveCheckpointConfig:
  period: int = 1000            # Save every `period` steps (and at the end).
  dtype: str = 'float32'        # Params are cast to this dtype when saved.
  keep: Optional[int] = None    # Keep the newest `keep` checkpoints (None = all).
  save_dataset: bool = False    # Also save the data iterator's position.
  use_async: bool = True        # Write in a background thread.


@gin.configurable
@dataclasses.dataclass
class RestoreCheckpointConfig:
  path: Any = None              # A model dir ('latest') or checkpoint_<step> dir.
  mode: str = 'latest'          # 'latest' or 'specific'.
  dtype: str = 'float32'        # Params are cast to this dtype after restore.
  strict: bool = True           # False: restore params only, fresh optimizer.
  # Start from scratch if nothing is found (training: also when every
  # checkpoint in the model dir is unreadable; they are moved aside first).
  fallback_to_scratch: bool = False
  restore_dataset: bool = False
  # Load weights written for a different model (a LongT5 checkpoint into a
  # fovea encoder); otherwise a fingerprint mismatch is an error.
  allow_model_mismatch: bool = False

  def __post_init__(self):
    if self.mode not in ('latest', 'specific'):
      raise ValueError(f"RestoreCheckpointConfig.mode must be 'latest' or "
                       f"'specific', got {self.mode!r}.")


def step_dir(model_dir: str, step: int) -> str:
  return os.path.join(model_dir, f'{STEP_PREFIX}_{step}')


def _cast_floats(tree: PyTree, dtype: str) -> PyTree:
  dtype = jnp.dtype(dtype)
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
      tree)


def _manager(directory: str, keep: Optional[int] = None, use_async: bool = True,
             read_only: bool = False) -> ocp.CheckpointManager:
  # Readers do not pass orbax's read_only (it warns on every use); create=False
  # keeps them from making directories, and they never save.
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, step_prefix=STEP_PREFIX,
      enable_async_checkpointing=use_async)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


class CheckpointManager:
  """Saves TrainStates under a model dir every `period` steps, keeps `keep`."""

  def __init__(self, model_dir: str, config: SaveCheckpointConfig,
               run_info: Optional[dict] = None):
    """`run_info` (model fingerprint, gin config, optimizer) goes into every
    checkpoint's meta."""
    self.model_dir = model_dir
    self.config = config
    self.run_info = dict(run_info or {})
    self._manager = _manager(model_dir, config.keep, config.use_async)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> Sequence[int]:
    return self._manager.all_steps()

  def should_save(self, step: int) -> bool:
    return step % self.config.period == 0

  def save(self, state: TrainState, meta: Optional[dict] = None,
           force: bool = True) -> bool:
    step = int(jax.device_get(state.step))
    if step in self._manager.all_steps():
      return False
    meta = dict(self.run_info, **(meta or {}), step=step)
    start = time.perf_counter()
    saved = self._manager.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(_cast_floats(state.params,
                                                      self.config.dtype)),
            opt_state=ocp.args.StandardSave(state.opt_state),
            meta=ocp.args.JsonSave(meta)),
        force=force)
    logging.info('Saved checkpoint step %d to %s in %.2f s%s.', step,
                 step_dir(self.model_dir, step), time.perf_counter() - start,
                 ' (files finish in the background)' if self.config.use_async
                 else '')
    return saved

  def wait_until_finished(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()


def _resolve(config: RestoreCheckpointConfig) -> tuple[str, Optional[int]]:
  """(manager directory, step) a restore config points at; step None = none."""
  path = config.path
  if isinstance(path, (list, tuple)):
    if len(path) != 1:
      raise ValueError('RestoreCheckpointConfig.path must name one checkpoint; '
                       f'got {path!r}.')
    path = path[0]
  if not path:
    raise ValueError('RestoreCheckpointConfig.path is empty; set it to a model '
                     'dir or a checkpoint_<step> directory.')
  path = os.path.abspath(os.fspath(path))
  match = _STEP_DIR.match(os.path.basename(path.rstrip('/')))
  if config.mode == 'specific' or match:
    if not match:
      raise ValueError(f"mode='specific' needs a {STEP_PREFIX}_<step> directory, "
                       f'got {path}.')
    if not os.path.isdir(path):
      return os.path.dirname(path), None
    return os.path.dirname(path), int(match.group(1))
  if not os.path.isdir(path):
    return path, None
  return path, _manager(path, read_only=True).latest_step()


def latest_in(directory: str, fallback_to_scratch: bool
              ) -> RestoreCheckpointConfig:
  """A full restore of the newest checkpoint in `directory`. Every field is
  spelled out: RestoreCheckpointConfig is gin-configurable, and a run file's
  bindings (finetune's strict=False) must not leak into internal restores."""
  return RestoreCheckpointConfig(path=directory, mode='latest', dtype='float32',
                                 strict=True,
                                 fallback_to_scratch=fallback_to_scratch,
                                 restore_dataset=True,
                                 allow_model_mismatch=False)


def missing_checkpoint_error(config: RestoreCheckpointConfig) -> CheckpointError:
  return CheckpointError(
      f'No checkpoint found at {config.path} (mode={config.mode!r}). Point '
      f'RestoreCheckpointConfig.path at a directory holding {STEP_PREFIX}_<step> '
      'checkpoints (or at one of them), or set fallback_to_scratch=True.')


def find_checkpoint(config: RestoreCheckpointConfig) -> Optional[str]:
  """The checkpoint directory a restore config resolves to, or None."""
  directory, step = _resolve(config)
  return None if step is None else step_dir(directory, step)


def read_meta(directory: str, step: int) -> dict:
  """A checkpoint's meta item alone (cheap: no arrays)."""
  manager = _manager(directory, read_only=True)
  try:
    restored = manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
  finally:
    manager.close()
  return dict(restored['meta'] or {})


def _restore_step(directory: str, step: int, target: TrainState, strict: bool,
                  dtype: str) -> tuple[TrainState, dict]:
  start = time.perf_counter()
  items = {'params': ocp.args.StandardRestore(target.params),
           'meta': ocp.args.JsonRestore()}
  if strict:
    items['opt_state'] = ocp.args.StandardRestore(target.opt_state)
  manager = _manager(directory, read_only=True)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(**items))
  finally:
    manager.close()
  params = _cast_floats(restored['params'], dtype)
  meta = dict(restored['meta'] or {})
  logging.info('Restored %s step %d from %s in %.2f s.',
               'train state' if strict else 'params', step,
               step_dir(directory, step), time.perf_counter() - start)
  if not strict:
    return TrainState(step=None, params=params, opt_state=None), meta
  state = TrainState(
      step=jax.device_put(jnp.asarray(meta.get('step', step), jnp.int32),
                          target.step.sharding),
      params=params, opt_state=restored['opt_state'])
  return state, meta


_LOCAL_FILE = re.compile(r'local file "([^"]+)"')


def _why_unreadable(error: Exception, directory: str, step: int
                    ) -> tuple[str, str]:
  """(the file that failed, why) for a restore error, as precisely as the
  storage layer says: the damaged file when it names one, else the item."""
  path = step_dir(directory, step)
  text = ' '.join(str(e) for e in _chain(error))
  files = [f for f in _LOCAL_FILE.findall(text)
           if f.startswith(path) and not f.endswith('/')]
  if files:
    where = files[-1]
  else:
    where = path
    for item in ('meta', 'params', 'opt_state'):
      if f'{os.sep}{item}' in text or f"'{item}'" in text:
        where = os.path.join(path, item)
        break
  first_line = (str(error).splitlines() or [''])[0]
  return where, f'{type(error).__name__}: {first_line}'[:300]


def _chain(error: BaseException):
  while error is not None:
    yield error
    error = error.__cause__ or error.__context__


def restore(config: RestoreCheckpointConfig, target: TrainState,
            model_fingerprint: Optional[dict] = None):
  """Restores onto `target` (abstract arrays carrying the shardings the
  Partitioner chose, `Trainer.state_layout(...).abstract`); returns
  (state or params-only state, meta).

  With strict=False only params come back (opt_state None): a warm start.
  Given `model_fingerprint`, a checkpoint written for another model raises
  ModelMismatchError naming the fields, unless `config.allow_model_mismatch`.
  Returns (None, None) when nothing is there and fallback_to_scratch is set;
  raises CheckpointError with the path and the fix otherwise.
  """
  directory, step = _resolve(config)
  if step is None:
    if config.fallback_to_scratch:
      logging.info('No checkpoint found at %s; starting from scratch '
                   '(fallback_to_scratch=True).', config.path)
      return None, None
    raise missing_checkpoint_error(config)
  try:
    meta = read_meta(directory, step)
    if model_fingerprint is not None:
      fingerprint_lib.check(meta.get('model'), model_fingerprint,
                            step_dir(directory, step),
                            config.allow_model_mismatch,
                            'RestoreCheckpointConfig.allow_model_mismatch = True')
    return _restore_step(directory, step, target, config.strict, config.dtype)
  except fingerprint_lib.ModelMismatchError:
    raise
  except Exception as e:  # orbax raises many types for damaged files.
    where, why = _why_unreadable(e, directory, step)
    if config.fallback_to_scratch:
      logging.warning('Checkpoint step %d unreadable (%s: %s); starting from '
                      'scratch (fallback_to_scratch=True).', step, where, why)
      return None, None
    raise CheckpointError(
        f'Could not restore {step_dir(directory, step)} ({where}: {why}). '
        'The checkpoint is corrupt or incomplete, or was written for a '
        'different model or optimizer: point RestoreCheckpointConfig.path at '
        'another checkpoint_<step>, or set fallback_to_scratch=True.') from e


def checkpoint_steps(directory: str) -> list[int]:
  """The complete checkpoints in `directory`, oldest first (an interrupted
  save leaves only orbax's temporary directory, which is not listed)."""
  if not os.path.isdir(directory):
    return []
  manager = _manager(directory, read_only=True)
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def move_aside(directory: str, step: int) -> str:
  """Moves checkpoint_<step> into `<directory>/unreadable/` (never deletes);
  returns where it went."""
  source = step_dir(directory, step)
  target = os.path.join(directory, UNREADABLE_DIR, os.path.basename(source))
  suffix = 1
  while os.path.exists(target):
    target = os.path.join(directory, UNREADABLE_DIR,
                          f'{os.path.basename(source)}.{suffix}')
    suffix += 1
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.rename(source, target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'move_aside_{step}')
  return target


def resume(model_dir: str, target: TrainState,
           check_compatible: Callable[[dict, str], None],
           fallback_to_scratch: bool = False):
  """The run's newest readable checkpoint in `model_dir`: (state, meta), or
  (None, None) when the model dir holds no checkpoint.

  Newer checkpoints that fail to restore are logged (step, file, why) and moved
  to `<model_dir>/unreadable/`, never deleted. `check_compatible(meta, path)`
  raises for a checkpoint this run's configuration cannot continue (another
  model or optimizer): that is the user's fix to make, so it stops the walk and
  nothing is moved. If no checkpoint is readable, raises CheckpointError
  listing them, unless `fallback_to_scratch` (then they are moved aside and
  (None, None) starts the run afresh).
  """
  steps = checkpoint_steps(model_dir)
  failed = []
  for step in reversed(steps):
    try:
      meta = read_meta(model_dir, step)
    except Exception as e:  # A damaged meta item.
      failed.append((step, *_why_unreadable(e, model_dir, step)))
      continue
    check_compatible(meta, step_dir(model_dir, step))
    try:
      state, meta = _restore_step(model_dir, step, target, strict=True,
                                  dtype='float32')
    except Exception as e:  # orbax raises many types for damaged files.
      failed.append((step, *_why_unreadable(e, model_dir, step)))
      continue
    for bad_step, where, why in failed:
      logging.warning(
          'Checkpoint step %d is unreadable (%s: %s); moved to %s, resuming '
          'from step %d.', bad_step, where, why, move_aside(model_dir, bad_step),
          step)
    return state, meta
  if not failed:
    return None, None
  listing = '; '.join(f'step {s}: {where}: {why}' for s, where, why in failed)
  if fallback_to_scratch:
    for bad_step, where, why in failed:
      logging.warning('Checkpoint step %d is unreadable (%s: %s); moved to %s, '
                      'starting from scratch (fallback_to_scratch=True).',
                      bad_step, where, why, move_aside(model_dir, bad_step))
    return None, None
  raise CheckpointError(
      f'No checkpoint in {model_dir} is readable, so training cannot resume '
      f'and nothing was changed there ({listing}). Fix: restore the damaged '
      'files, or start over in a new MODEL_DIR, or set '
      'CheckpointConfig.restore = @RestoreCheckpointConfig() with '
      'RestoreCheckpointConfig.fallback_to_scratch = True to move them to '
      f'{os.path.join(model_dir, UNREADABLE_DIR)} and start from scratch.')


def restore_params(config: RestoreCheckpointConfig,
                   partitioner: partitioner_lib.Partitioner,
                   init_variables_fn: Any, model_fingerprint: dict,
                   seed: int = 0) -> tuple[PyTree, int]:
  """(params on the partitioner's mesh, checkpoint step) for evaluation,
  inference and export: params only, cast to `config.dtype`, from a checkpoint
  whose model fingerprint matches (see `restore`). Random init (step 0) only if
  the config allows fallback_to_scratch and no checkpoint exists."""
  abstract, _ = partitioner.params_layout(init_variables_fn,
                                          jax.random.PRNGKey(0))
  target = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32),
                      params=abstract, opt_state=None)
  state, meta = restore(dataclasses.replace(config, strict=False), target,
                        model_fingerprint)
  if state is not None:
    return state.params, int(meta.get('step', 0))
  params, _ = partitioner.initialize(init_variables_fn,
                                     jax.random.PRNGKey(seed))
  return params, 0


def save_params(directory: str, params: PyTree, dtype: str = 'float32',
                meta: Optional[dict] = None) -> str:
  """A params-only checkpoint (what export writes and a warm start reads)."""
  manager = _manager(directory, use_async=False)
  step = int((meta or {}).get('step', 0))
  manager.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(_cast_floats(params, dtype)),
      meta=ocp.args.JsonSave(dict(meta or {}, step=step, params_only=True))),
               force=True)
  manager.wait_until_finished()
  manager.close()
  return step_dir(directory, step)


@gin.configurable
@dataclasses.dataclass
class CheckpointConfig:
  """T5X's pair: how to save this run and what to restore at its start."""
  save: Optional[SaveCheckpointConfig] = None
  restore: Optional[RestoreCheckpointConfig] = None

"""Orbax checkpoints in T5X's vocabulary: save and restore configs, one manager.

A checkpoint directory `<model_dir>/checkpoint_<step>/` holds three items:
`params`, `opt_state` (orbax StandardSave, each leaf in its shards) and `meta`
(JSON: step and, when asked, the data iterator's position). Params are a separate
item so a warm start or an exported params-only checkpoint restores them alone.
Restores target abstract arrays carrying the *current* mesh's shardings, so a
checkpoint written on one mesh reads back onto any other.
"""
import dataclasses
import logging
import os
import re
from typing import Any, Optional, Sequence

import gin
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from fovea_jax.sharding import partitioner as partitioner_lib
from fovea_jax.training.trainer import TrainState

PyTree = Any
STEP_PREFIX = 'checkpoint'
_STEP_DIR = re.compile(rf'^{STEP_PREFIX}_(\d+)$')


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
  fallback_to_scratch: bool = False  # Start from scratch if nothing is found.
  restore_dataset: bool = False

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

  def __init__(self, model_dir: str, config: SaveCheckpointConfig):
    self.model_dir = model_dir
    self.config = config
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
    meta = dict(meta or {}, step=step)
    saved = self._manager.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(_cast_floats(state.params,
                                                      self.config.dtype)),
            opt_state=ocp.args.StandardSave(state.opt_state),
            meta=ocp.args.JsonSave(meta)),
        force=force)
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
                                 restore_dataset=True)


def missing_checkpoint_error(config: RestoreCheckpointConfig) -> CheckpointError:
  return CheckpointError(
      f'No checkpoint found at {config.path} (mode={config.mode!r}). Point '
      f'RestoreCheckpointConfig.path at a directory holding {STEP_PREFIX}_<step> '
      'checkpoints (or at one of them), or set fallback_to_scratch=True.')


def find_checkpoint(config: RestoreCheckpointConfig) -> Optional[str]:
  """The checkpoint directory a restore config resolves to, or None."""
  directory, step = _resolve(config)
  return None if step is None else step_dir(directory, step)


def restore(config: RestoreCheckpointConfig, target: TrainState):
  """Restores onto `target` (abstract arrays carrying the shardings the
  Partitioner chose, `Trainer.state_layout(...).abstract`); returns
  (state or params-only state, meta).

  With strict=False only params come back (opt_state None): a warm start.
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

  items = {'params': ocp.args.StandardRestore(target.params),
           'meta': ocp.args.JsonRestore()}
  if config.strict:
    items['opt_state'] = ocp.args.StandardRestore(target.opt_state)
  manager = _manager(directory, read_only=True)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(**items))
  except Exception as e:  # orbax raises many types for damaged files.
    if config.fallback_to_scratch:
      logging.warning('Checkpoint %s unreadable (%s); starting from scratch.',
                      step_dir(directory, step), e)
      return None, None
    raise CheckpointError(
        f'Could not restore {step_dir(directory, step)}: {type(e).__name__}: {e}. '
        'The checkpoint is corrupt or incomplete, or was written for a different '
        'model: delete it to fall back to the previous one, point '
        'RestoreCheckpointConfig.path elsewhere, or set fallback_to_scratch=True.'
    ) from e
  finally:
    manager.close()
  params = _cast_floats(restored['params'], config.dtype)
  meta = dict(restored['meta'] or {})
  if not config.strict:
    return TrainState(step=None, params=params, opt_state=None), meta
  state = TrainState(
      step=jax.device_put(jnp.asarray(meta.get('step', step), jnp.int32),
                          target.step.sharding),
      params=params, opt_state=restored['opt_state'])
  return state, meta


def restore_params(config: RestoreCheckpointConfig,
                   partitioner: partitioner_lib.Partitioner,
                   init_variables_fn: Any, seed: int = 0) -> tuple[PyTree, int]:
  """(params on the partitioner's mesh, checkpoint step) for evaluation,
  inference and export: params only, cast to `config.dtype`. Random init
  (step 0) only if the config allows fallback_to_scratch and no checkpoint
  exists."""
  abstract, _ = partitioner.params_layout(init_variables_fn,
                                          jax.random.PRNGKey(0))
  target = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32),
                      params=abstract, opt_state=None)
  state, meta = restore(dataclasses.replace(config, strict=False), target)
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

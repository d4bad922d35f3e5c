"""`train`: the gin-configured body of `python -m fovea_jax.train`.

Parameter names follow T5X's `train` (model, train_dataset_cfg, checkpoint_cfg,
partitioner, trainer_cls, model_dir, total_steps, stats_period, random_seed), so
T5X run files carry over. The work is done by Trainer, train_loop and the data
and model libraries; this function only wires them together and validates the
configuration before the first step.
"""
import logging
import os
from typing import Any, Callable, Optional

import gin
import jax

from fovea_jax.data.config import DatasetConfig
from fovea_jax.data.iterator import DataIterator
from fovea_jax.training import checkpoints
from fovea_jax.training import model_inputs
from fovea_jax.training import train_loop
from fovea_jax.training import trainer as trainer_lib
from fovea_jax.training import warm_start


@gin.configurable(denylist=['step_callback'])
def train(*,
          model: Any = gin.REQUIRED,
          train_dataset_cfg: DatasetConfig = gin.REQUIRED,
          partitioner: Any = gin.REQUIRED,
          model_dir: str = gin.REQUIRED,
          total_steps: int = gin.REQUIRED,
          checkpoint_cfg: Optional[checkpoints.CheckpointConfig] = None,
          trainer_cls: Callable[..., trainer_lib.Trainer] = trainer_lib.Trainer,
          stats_period: int = 10,
          random_seed: int = 0,
          show_progress: bool = True,
          step_callback=None) -> train_loop.LoopResult:
  """Trains `model` on `train_dataset_cfg` until `total_steps`; returns the loop's
  result (final state, the step it resumed from, whether SIGTERM stopped it)."""
  if not model_dir:
    raise ValueError('MODEL_DIR is empty; set --gin.MODEL_DIR="/path/to/run".')
  model_dir = os.path.abspath(os.path.expanduser(model_dir))
  os.makedirs(model_dir, exist_ok=True)
  checkpoint_cfg = checkpoint_cfg or checkpoints.CheckpointConfig()
  save_cfg = checkpoint_cfg.save or checkpoints.SaveCheckpointConfig()
  trainer = trainer_cls(model=model, partitioner=partitioner)

  shapes, types = model_inputs.input_shapes_and_types(model, train_dataset_cfg)
  init_variables_fn = model_inputs.init_variables_fn(model, shapes, types)
  model_inputs.check_model_accepts(model, init_variables_fn, shapes, types,
                                   train_dataset_cfg.task_feature_lengths,
                                   partitioner)
  # Fails fast on a missing checkpoint before any data is read.
  restore_cfg = warm_start.resolve(checkpoint_cfg.restore, model, model_dir)
  if (restore_cfg is not None and restore_cfg.path and
      not restore_cfg.fallback_to_scratch and
      checkpoints.find_checkpoint(restore_cfg) is None):
    raise checkpoints.missing_checkpoint_error(restore_cfg)

  batches = DataIterator(train_dataset_cfg,
                         feature_converter_cls=getattr(
                             model, 'FEATURE_CONVERTER_CLS', None))
  logging.info('Training %s on %s for %d steps in %s (mesh %s).',
               type(model).__name__, train_dataset_cfg.mixture_or_task_name,
               total_steps, model_dir, dict(partitioner.mesh.shape))
  # As T5X: config.gin is everything bound (feed it back with
  # --gin_file=<model_dir>/config.gin); operative_config.gin, written once the
  # run ends, is what the run actually used, defaults included.
  _write_gin(model_dir, 'config.gin', gin.config_str())
  result = train_loop.run(
      trainer, init_variables_fn, batches, total_steps=total_steps,
      model_dir=model_dir, save_config=save_cfg, initial_restore=restore_cfg,
      seed=random_seed, log_period=stats_period, show_progress=show_progress,
      step_callback=step_callback,
      # The configurables this run has called so far: what built its model.
      run_info={'gin_config': gin.operative_config_str()})
  _write_gin(model_dir, 'operative_config.gin', gin.operative_config_str())
  return result


def _write_gin(model_dir: str, name: str, text: str) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(model_dir, name), 'w') as f:
      f.write(text)

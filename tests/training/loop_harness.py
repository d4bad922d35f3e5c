"""Runs the training loop on the stand-in model; also a script for kill tests.

`python -m tests.training.loop_harness MODEL_DIR TOTAL_STEPS` trains with a
checkpoint every 2 steps and a pause after each step, so a test can SIGKILL it
mid-way and start it again. With `HANG_SAVE_AT_STEP=N` in the environment the
asynchronous save of step N writes its files but never commits them (orbax's
final rename waits forever), after touching `MODEL_DIR/saving_N`: a test kills
the process there, in the middle of an async save.
"""
import asyncio
import functools
import os
import sys
import time

import jax
import numpy as np

from fovea_jax.optim import lr_schedules
from fovea_jax.training import checkpoints
from fovea_jax.training import train_loop
from fovea_jax.training import trainer as trainer_lib
from . import tiny_model


def synthetic_batches(nan_at_step=None):
  step = 0
  while True:
    batch = tiny_model.synthetic_batch(step)
    if step == nan_at_step:
      batch['decoder_loss_weights'][:] = np.nan
    yield batch
    step += 1


def train(model_dir, total_steps, mesh_shape=(4, 2), period=2,
          base_learning_rate=0.5, model=None, **kw):
  model = model or tiny_model.TinyModel()
  trainer = trainer_lib.Trainer(
      model, tiny_model.make_partitioner(mesh_shape),
      learning_rate_fn=lr_schedules.create_learning_rate_scheduler(
          'constant * rsqrt_decay', base_learning_rate=base_learning_rate,
          warmup_steps=4))
  init = functools.partial(model.get_initial_variables,
                           input_shapes={'decoder_input_tokens': (8, 8)})
  batches = kw.pop('batches', None) or synthetic_batches()
  return train_loop.run(
      trainer, init, batches, total_steps=total_steps, model_dir=str(model_dir),
      save_config=checkpoints.SaveCheckpointConfig(period=period, keep=3),
      log_period=1, show_progress=False, **kw)


def hang_async_save_at(model_dir, step):
  # pylint: disable=g-import-not-at-top
  from orbax.checkpoint._src.path import atomicity
  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def never_commit(self):
    if self.get_final().name == f'{checkpoints.STEP_PREFIX}_{step}':
      open(os.path.join(model_dir, f'saving_{step}'), 'w').close()
      await asyncio.sleep(3600)
    return await finalize(self)

  atomicity.AtomicRenameTemporaryPath.finalize = never_commit


if __name__ == '__main__':
  if os.environ.get('HANG_SAVE_AT_STEP'):
    hang_async_save_at(sys.argv[1], int(os.environ['HANG_SAVE_AT_STEP']))
  result = train(sys.argv[1], int(sys.argv[2]),
                 step_callback=lambda step, state: time.sleep(0.3))
  np.savez(sys.argv[1] + '/final_params.npz',
           *[np.asarray(x) for x in jax.tree.leaves(result.state.params)])

"""Runs the training loop on the stand-in model; also a script for kill tests.

`python -m tests.training.loop_harness MODEL_DIR TOTAL_STEPS` trains with a
checkpoint every 2 steps and a pause after each step, so a test can SIGKILL it
mid-way and start it again.
"""
import functools
import sys
import time

import jax
import numpy as np

from fovea_jax.training import checkpoints
from fovea_jax.training import lr_schedules
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


def train(model_dir, total_steps, mesh_shape=(4, 2), period=2, **kw):
  model = tiny_model.TinyModel()
  trainer = trainer_lib.Trainer(
      model, tiny_model.make_partitioner(mesh_shape),
      learning_rate_fn=lr_schedules.create_learning_rate_scheduler(
          'constant * rsqrt_decay', base_learning_rate=0.5, warmup_steps=4))
  init = functools.partial(model.get_initial_variables,
                           input_shapes={'decoder_input_tokens': (8, 8)})
  batches = kw.pop('batches', None) or synthetic_batches()
  return train_loop.run(
      trainer, init, batches, total_steps=total_steps, model_dir=str(model_dir),
      save_config=checkpoints.SaveCheckpointConfig(period=period, keep=3),
      log_period=1, show_progress=False, **kw)


if __name__ == '__main__':
  result = train(sys.argv[1], int(sys.argv[2]),
                 step_callback=lambda step, state: time.sleep(0.3))
  np.savez(sys.argv[1] + '/final_params.npz',
           *[np.asarray(x) for x in jax.tree.leaves(result.state.params)])

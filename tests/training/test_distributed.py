"""Two local processes x two CPU devices run the train entry point as one job:
a global (4, 1) mesh, per-process data shards, orbax writing from both. The
checkpoint they wrote then restores here, in one process on an (8, 1) mesh, with
each process's data position inside.

(Resuming with several processes runs the same code path as with one, tested in
test_train_loop; a second two-process launch would double this test's time.)"""
import functools
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from fovea_jax.optim import lr_schedules
from fovea_jax.sharding import partitioner as partitioner_lib
from fovea_jax.training import checkpoints
from fovea_jax.training import metrics_writers
from fovea_jax.training import trainer as trainer_lib
from . import gin_runs

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def launch(model_dir, steps):
  port = _free_port()
  bindings = gin_runs.train_bindings(model_dir, steps) + [
      'CHECKPOINT_PERIOD = 2']
  command = [sys.executable, '-m', 'fovea_jax.train',
             f'--gin_file={gin_runs.STANDIN_MODEL_GIN}',
             '--gin_file=runs/pretrain.gin'] + [
                 f'--gin_bindings={b}' for b in bindings]
  processes = []
  for process_id in range(2):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu',
               XLA_FLAGS='--xla_force_host_platform_device_count=2',
               JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
               JAX_NUM_PROCESSES='2', JAX_PROCESS_ID=str(process_id))
    processes.append(subprocess.Popen(command, cwd=REPO, env=env,
                                      stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
  outputs = [p.communicate(timeout=240)[0] for p in processes]
  for p, out in zip(processes, outputs):
    assert p.returncode == 0, out[-3000:]
  return outputs


def test_two_processes_train_save_and_restore_elsewhere(tmp_path):
  model_dir = str(tmp_path / 'run')
  launch(model_dir, 4)
  records = metrics_writers.read_jsonl(os.path.join(model_dir, 'metrics.jsonl'))
  assert [r['step'] for r in records] == [1, 2, 3, 4]  # One writer: process 0.
  assert records[-1]['loss'] < records[0]['loss']

  model = gin_runs.standin_model()
  partitioner = partitioner_lib.Partitioner(num_partitions=1)
  shapes = {'encoder_input_tokens': (8, 64), 'decoder_input_tokens': (8, 16)}
  types = {k: np.int32 for k in shapes}
  trainer = trainer_lib.Trainer(
      model, partitioner,
      learning_rate_fn=lr_schedules.create_learning_rate_scheduler('constant'))
  layout = trainer.state_layout(functools.partial(
      model.get_initial_variables, input_shapes=shapes, input_types=types))
  state, meta = checkpoints.restore(
      checkpoints.RestoreCheckpointConfig(path=model_dir), layout.abstract)
  assert int(state.step) == 4
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
  positions = meta['dataset']
  assert sorted(positions) == ['0', '1']
  assert all(positions[i]['fingerprint']['num_shards'] == 2 for i in '01')
  assert all(positions[i]['batches_consumed'] == 4 for i in '01')

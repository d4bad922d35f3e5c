"""Train a model: `python -m fovea_jax.train --gin_file=MODEL.gin --gin_file=runs/pretrain.gin --gin.MODEL_DIR="'/tmp/run'"`.

Thin entry point (T5X's command line); the work is in fovea_jax.runs.train_lib.
Several processes: set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
JAX_PROCESS_ID (see fovea_jax.runs.distributed).
"""
from fovea_jax.runs import entry_points


def main():
  entry_points.main('train', program='fovea_jax.train')


if __name__ == '__main__':
  main()

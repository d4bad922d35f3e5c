"""Decode a task split: `python -m fovea_jax.infer --gin_file=MODEL.gin --gin_file=runs/infer.gin --gin.CHECKPOINT_PATH="'/tmp/run'" --gin.INFER_OUTPUT_DIR="'/tmp/run/infer'"`.

Thin entry point; the work is in fovea_jax.runs.infer_lib.
"""
from fovea_jax.runs import entry_points


def main():
  entry_points.main('infer', program='fovea_jax.infer')


if __name__ == '__main__':
  main()

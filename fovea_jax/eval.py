"""Evaluate a checkpoint: `python -m fovea_jax.eval --gin_file=MODEL.gin --gin_file=runs/eval.gin --gin.CHECKPOINT_PATH="'/tmp/run'" --gin.EVAL_OUTPUT_DIR="'/tmp/run/eval'"`.

Thin entry point; the work is in fovea_jax.runs.eval_lib.
"""
from fovea_jax.runs import entry_points


def main():
  entry_points.main('evaluate', program='fovea_jax.eval')


if __name__ == '__main__':
  main()

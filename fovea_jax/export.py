"""Export a checkpoint: `python -m fovea_jax.export --gin_file=MODEL.gin --gin_file=runs/export.gin --gin.CHECKPOINT_PATH="'/tmp/run'" --gin.EXPORT_OUTPUT_DIR="'/tmp/run/export'"`.

Thin entry point; the work is in fovea_jax.runs.export_lib.
"""
from fovea_jax.runs import entry_points


def main():
  entry_points.main('export', program='fovea_jax.export')


if __name__ == '__main__':
  main()

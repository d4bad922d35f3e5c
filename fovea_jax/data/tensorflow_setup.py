"""Imports TensorFlow for input pipelines only: quiet and kept off any GPU.

TensorFlow and JAX share the process; if TensorFlow grabbed the GPU it would
reserve most of its memory before JAX gets any. Import TensorFlow through
`import_tensorflow()` (or import this module first) in every data/eval file.
"""
import os

# Must be set before TensorFlow is first imported to silence its C++ logging.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


def import_tensorflow():
  """Returns the `tensorflow` module with every GPU hidden from it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:
    # Devices were already initialised (by an earlier import); TensorFlow
    # refuses to change them then, and they were hidden at that time.
    pass
  return tf


tf = import_tensorflow()

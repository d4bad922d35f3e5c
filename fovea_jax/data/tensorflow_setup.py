"""Imports TensorFlow for input pipelines only: quiet and kept off any GPU.

TensorFlow and JAX share the process; if TensorFlow grabbed the GPU it would
reserve most of its memory before JAX gets any. Import TensorFlow through
`import_tensorflow()` (or import this module first) in every data/eval file.
"""
import os
import sys

# Must be set before TensorFlow is first imported to silence its C++ logging.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


def _import_with_native_stderr_silenced():
  # TensorFlow's native libraries log start-up notes (oneDNN, missing CUDA)
  # before their logging is initialised, so TF_CPP_MIN_LOG_LEVEL cannot stop
  # them; hide file descriptor 2 for the duration of the import instead.
  # Python-level errors still propagate after stderr is restored.
  sys.stderr.flush()
  saved_stderr = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    import tensorflow  # pylint: disable=g-import-not-at-top
    import tensorflow_text  # noqa: F401  (seqio's; loads more native code)
  finally:
    os.dup2(saved_stderr, 2)
    os.close(saved_stderr)
    os.close(devnull)
  return tensorflow


def import_tensorflow():
  """Returns the `tensorflow` module with every GPU hidden from it."""
  if 'tensorflow' in sys.modules:
    tf = sys.modules['tensorflow']
  else:
    tf = _import_with_native_stderr_silenced()
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:
    # Devices were already initialised (by an earlier import); TensorFlow
    # refuses to change them then, and they were hidden at that time.
    pass
  return tf


tf = import_tensorflow()

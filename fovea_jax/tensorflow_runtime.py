"""TensorFlow and seqio for the input pipelines: imported once, quiet, GPU-less.

Every fovea_jax module that needs seqio or TensorFlow takes them from here
(`from fovea_jax.tensorflow_runtime import seqio, tf`, and `tfds`), so the set-up below
always runs first and no module depends on import order. It sits at the top
of the package, below data/, tasks/ and evaluation/, so that they need not
import one another to get it; `import fovea_jax` (attention users) does not
load it.

TensorFlow and JAX share the process; if TensorFlow grabbed the GPU it would
reserve most of its memory before JAX gets any.
"""
import contextlib
import os
import sys

# Must be set before TensorFlow is first imported to silence its C++ logging.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


@contextlib.contextmanager
def _native_stderr_silenced():
  """Hides file descriptor 2 while TensorFlow's native code starts up.

  TensorFlow's native libraries log start-up notes (oneDNN, missing CUDA) before
  their logging is initialised, so TF_CPP_MIN_LOG_LEVEL cannot stop them, and
  its first device enumeration probes CUDA (`failed call to cuInit` on every
  machine without a GPU). Python-level errors still propagate after stderr is
  restored.
  """
  sys.stderr.flush()
  saved_stderr = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved_stderr, 2)
    os.close(saved_stderr)
    os.close(devnull)


def _import_quietly():
  """(tensorflow, seqio, tensorflow_datasets), with every GPU hidden from
  TensorFlow."""
  # pylint: disable=g-import-not-at-top
  with _native_stderr_silenced():
    import tensorflow as tf_module
    import tensorflow_text  # noqa: F401  (seqio's; loads more native code)
    try:
      tf_module.config.set_visible_devices([], 'GPU')
    except RuntimeError:
      # Devices were already initialised (by an earlier import); TensorFlow
      # refuses to change them then, and they were hidden at that time.
      pass
    import seqio as seqio_module
    import tensorflow_datasets as tfds_module
  return tf_module, seqio_module, tfds_module


tf, seqio, tfds = _import_quietly()

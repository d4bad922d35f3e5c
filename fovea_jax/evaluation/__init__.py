"""Evaluation: seqio metric functions and a `seqio.Evaluator` runner."""
# First: seqio imports TensorFlow, which must meet its quiet, GPU-less set-up.
from fovea_jax.data import tensorflow_setup  # noqa: F401  pylint: disable=unused-import

"""XLA CPU compiler defaults that fovea_jax's programs are measured with.

XLA's CPU backend hands dots, elementwise ops and reductions to YNNPACK fusions by
default. Its reduction fusions are slow on the softmax and normalisation
reductions of these models: keeping YNNPACK to dots made the training step of the
tools/benchmark_model.py encoder-decoder 1.36x (fovea), 1.45x (LongT5 TGlobal) and
1.53x (LongT5 local) faster at 2k tokens, measured side by side on jaxlib 0.10.2.
The flag is experimental, and XLA aborts on flags it does not know, so it is added
only for the jaxlib series it was measured on, only when the caller has not set it,
and only before JAX's backends start (XLA reads XLA_FLAGS once, at start-up).
"""
import os

YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
YNN_DOT_ONLY = f'{YNN_FLAG}=LIBRARY_FUSION_TYPE_DOT'
MEASURED_JAXLIB_SERIES = ('0.10.',)


def add_default_flags(environ=os.environ):
  """Appends the YNNPACK dot-only flag to XLA_FLAGS where it is known to help."""
  try:
    from jaxlib import version
  except ImportError:
    return
  if not version.__version__.startswith(MEASURED_JAXLIB_SERIES):
    return
  flags = environ.get('XLA_FLAGS', '')
  if YNN_FLAG not in flags:
    environ['XLA_FLAGS'] = f'{flags} {YNN_DOT_ONLY}'.strip()

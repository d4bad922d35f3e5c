"""fovea_jax: hierarchical long-context attention in JAX/Flax."""
from fovea_jax import xla_cpu as _xla_cpu

_xla_cpu.add_default_flags()

"""fovea_jax.xla_cpu: the YNNPACK dot-only default joins XLA_FLAGS, never overrides."""
from jaxlib import version

from fovea_jax import xla_cpu


def test_adds_flag_after_existing_flags(monkeypatch):
  monkeypatch.setattr(xla_cpu, 'MEASURED_JAXLIB_SERIES', (version.__version__,))
  environ = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  xla_cpu.add_default_flags(environ)
  assert environ['XLA_FLAGS'] == ('--xla_force_host_platform_device_count=8 '
                                  + xla_cpu.YNN_DOT_ONLY)
  empty = {}
  xla_cpu.add_default_flags(empty)
  assert empty['XLA_FLAGS'] == xla_cpu.YNN_DOT_ONLY


def test_keeps_callers_choice_and_unmeasured_versions(monkeypatch):
  monkeypatch.setattr(xla_cpu, 'MEASURED_JAXLIB_SERIES', (version.__version__,))
  chosen = {'XLA_FLAGS': f'{xla_cpu.YNN_FLAG}=LIBRARY_FUSION_TYPE_REDUCE'}
  xla_cpu.add_default_flags(chosen)
  assert chosen['XLA_FLAGS'] == f'{xla_cpu.YNN_FLAG}=LIBRARY_FUSION_TYPE_REDUCE'
  monkeypatch.setattr(xla_cpu, 'MEASURED_JAXLIB_SERIES', ('99.',))
  other = {}
  xla_cpu.add_default_flags(other)
  assert other == {}

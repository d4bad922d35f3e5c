"""The config.json exported for Hugging Face states the encoder's own settings."""
import pytest

from fovea_jax.interop import hf_longt5
from fovea_jax.layers import schemes
from tests.networks.configs import tiny_config


@pytest.mark.parametrize('scheme, radius, group', [
    (schemes.Local(window=31), 31, 16),
    (schemes.LongT5TransientGlobal(local_radius=15, global_block_size=4), 15, 4),
    (schemes.Fovea(), 127, 16),  # weights only: LongT5's own settings
])
def test_exported_local_radius_and_global_block_size(scheme, radius, group):
  config = tiny_config(attention=scheme)
  exported = hf_longt5.hf_config_dict(config)
  assert exported['local_radius'] == radius
  assert exported['global_block_size'] == group

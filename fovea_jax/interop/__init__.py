"""Checkpoint interop with Hugging Face `transformers` (LongT5 and T5 layouts)."""
from fovea_jax.interop.hf_longt5 import HfNameMap
from fovea_jax.interop.hf_longt5 import config_from_hf
from fovea_jax.interop.hf_longt5 import export_hf_state_dict
from fovea_jax.interop.hf_longt5 import hf_config_dict
from fovea_jax.interop.hf_longt5 import import_hf_state_dict
from fovea_jax.interop.hf_longt5 import load_hf_checkpoint
from fovea_jax.interop.hf_longt5 import name_map
from fovea_jax.interop.hf_longt5 import save_hf_checkpoint

__all__ = ['HfNameMap', 'config_from_hf', 'export_hf_state_dict',
           'hf_config_dict', 'import_hf_state_dict', 'load_hf_checkpoint',
           'name_map', 'save_hf_checkpoint']

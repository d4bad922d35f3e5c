"""Reads an export (`python -m fovea_jax.export`) back for serving.

Needs only jax, numpy and safetensors: this file imports nothing from
fovea_jax, so it can be copied next to the exported files and used where
fovea_jax is not installed (tests/training/gin_runs.py runs it that way).

    functions, params = load_exported('/tmp/export')
    tokens = functions['predict'].call(params, input_tokens)
"""
import json
import os

import jax
import safetensors.numpy


def load_exported(export_dir: str) -> tuple[dict, dict]:
  """({name: jax.export.Exported}, flat params) read back from `export_dir`,
  one function for each entry of its manifest.json."""
  with open(os.path.join(export_dir, 'manifest.json')) as f:
    manifest = json.load(f)
  functions = {}
  for name in manifest['functions']:
    with open(os.path.join(export_dir, f'{name}.jax_export'), 'rb') as f:
      functions[name] = jax.export.deserialize(bytearray(f.read()))
  params = safetensors.numpy.load_file(os.path.join(export_dir,
                                                    'params.safetensors'))
  return functions, params

"""Builds models from the repository's gin files, for the tests."""
import pathlib

import gin

GIN_DIR = pathlib.Path(__file__).parents[2] / 'gin_configs'


def build_model(gin_files, bindings=()):
  """Parses `gin_files` (relative to gin_configs/) then `bindings`, returns
  `%MODEL` and leaves no gin state behind."""
  gin.clear_config()
  gin.add_config_file_search_path(str(GIN_DIR))
  try:
    gin.parse_config_files_and_bindings(list(gin_files), list(bindings),
                                        skip_unknown=False)
    return gin.query_parameter('%MODEL').scoped_configurable_fn()
  finally:
    gin.clear_config()

"""Where the data and vocabularies that cannot ship with the code live.

Each location is looked up when a dataset is first built (not when the task is
registered), from a gin binding or an environment variable, so importing
`fovea_jax.tasks` never needs any of them. In a gin file:

    SENTENCEPIECE_MODEL = '/data/spm/multi_news_32k.model'
    paths.sentencepiece_model_path.path = %SENTENCEPIECE_MODEL
"""
import os
from typing import Optional

import gin

from fovea_jax.data.errors import DataError


def _resolve(value: Optional[str], env_var: str, what: str,
             configurable: str) -> str:
  value = value or os.environ.get(env_var)
  if not value:
    raise DataError(
        env_var, f'no path for {what} was given',
        f"bind it in gin (`paths.{configurable}.path = '/path'` after "
        f'`from fovea_jax.tasks import paths`) or set the environment variable '
        f'{env_var}')
  return os.path.expanduser(value)


@gin.configurable
def sentencepiece_model_path(path: Optional[str] = None) -> str:
  """The SentencePiece `.model` file used by the TFDS and WCEP tasks."""
  return _resolve(path, 'FOVEA_SENTENCEPIECE_MODEL',
                  'the SentencePiece model', 'sentencepiece_model_path')


@gin.configurable
def wcep10_dir(path: Optional[str] = None) -> str:
  """Folder holding WCEP-10 as `{train,validation,test}.jsonl`."""
  return _resolve(path, 'FOVEA_WCEP10_DIR', 'the WCEP-10 JSONL folder',
                  'wcep10_dir')


@gin.configurable
def enwik8_file(path: Optional[str] = None) -> str:
  """The raw `enwik8` file (100M bytes of Wikipedia XML)."""
  return _resolve(path, 'FOVEA_ENWIK8_FILE', 'the enwik8 file', 'enwik8_file')

"""Vocabularies for the registered tasks.

Byte-level tasks use `seqio.ByteVocabulary`. Word-piece tasks use a
SentencePiece model whose path is resolved when first used (see `paths.py`), so
tasks can be registered at import time before gin has been parsed.
"""
import gin

from fovea_jax.tasks import paths
from fovea_jax.tensorflow_runtime import seqio


@gin.configurable
class ConfiguredSentencePieceVocabulary(seqio.SentencePieceVocabulary):
  """A `SentencePieceVocabulary` reading `paths.sentencepiece_model_path()`."""

  def __init__(self, extra_ids: int = 0):
    super().__init__(sentencepiece_model_file='', extra_ids=extra_ids)

  def _model_context(self):
    path = paths.sentencepiece_model_path()
    if self._model is not None and path == self._sentencepiece_model_file:
      return self._model
    # A different path bound since the last load (tests, a new gin config).
    self._sentencepiece_model_file = path
    self._model = None
    return super()._model_context()

  @property
  def sentencepiece_model_file(self) -> str:
    return paths.sentencepiece_model_path()

  # seqio compares a model's vocabulary with its tasks'. Every instance reads
  # the same configured path, so equality must not depend on which instance
  # has loaded its model yet.
  def __eq__(self, other):
    if isinstance(other, ConfiguredSentencePieceVocabulary):
      return self.extra_ids == other.extra_ids
    if isinstance(other, seqio.SentencePieceVocabulary):
      return (self.extra_ids == other.extra_ids and
              self.sentencepiece_model_file == other.sentencepiece_model_file)
    return False

  def __hash__(self):
    return hash((ConfiguredSentencePieceVocabulary, self.extra_ids))


BYTE_VOCABULARY = seqio.ByteVocabulary()
SENTENCEPIECE_VOCABULARY = ConfiguredSentencePieceVocabulary()

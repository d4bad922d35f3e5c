"""Benchmark tasks read through TensorFlow Datasets.

The data must already be prepared in a TFDS data dir; nothing is downloaded
here. TFDS looks in `TFDS_DATA_DIR` (default `~/tensorflow_datasets`) and in
every dir registered with `tfds.core.add_data_dir`; prepare a dataset there
with `tfds build <name>:<version> --data_dir=<dir>` (the names and versions are
below). A run whose split is not prepared stops before training with a
`DataError` naming the dirs searched and that command. Tokens come from the
SentencePiece model at `paths.sentencepiece_model_path()`.
"""
import os

from fovea_jax.data.errors import DataError
from fovea_jax.tasks import registration
from fovea_jax.tasks import vocabularies
from fovea_jax.tensorflow_runtime import seqio
from fovea_jax.tensorflow_runtime import tfds

# task name -> (TFDS name with version, document feature, summary feature)
SUMMARIZATION_DATASETS = {
    'multi_news': ('multi_news:2.1.0', 'document', 'summary'),
    'pubmed': ('scientific_papers/pubmed:1.1.1', 'article', 'abstract'),
    'arxiv': ('scientific_papers/arxiv:1.1.1', 'article', 'abstract'),
}
# task name -> (TFDS name with version, text feature)
LANGUAGE_MODEL_DATASETS = {
    'pg19': ('pg19:0.1.1', 'book_text'),
}
# Each of these datasets has these splits. Declaring them lets a task name its
# splits before its data is prepared (seqio otherwise reads them from the
# prepared data), so a split name that can never exist is refused as such.
SPLITS = ('train', 'validation', 'test')


class PreparedTfdsDataSource(seqio.TfdsDataSource):
  """seqio's TfdsDataSource, checking first that the split is prepared.

  seqio would fail later with TFDS's `KeyError: splits['train']` (or try to
  download); this says which dirs were searched and how to prepare the data.
  """

  def check_prepared(self, split: str) -> None:
    loader = self.tfds_dataset
    builder = loader.builder
    prepared = builder.info.splits
    if split in prepared:
      return
    utils = tfds.core.utils
    searched = [os.fspath(d) for d in
                utils.file_utils.list_data_dirs(given_data_dir=loader.data_dir)]
    versions = sorted(str(v) for v in utils.version.list_all_versions(
        os.path.dirname(builder.data_dir)) if v != builder.version)
    if prepared:
      problem = (f'{loader.name} is prepared with the splits '
                 f'{sorted(prepared)} but not {split!r}')
    else:
      problem = (f'{loader.name} is not prepared in any TFDS data dir searched '
                 f'({", ".join(searched)})')
      if versions:
        problem += f'; it holds other versions only ({", ".join(versions)})'
    raise DataError(
        builder.data_dir, problem,
        f'prepare it with `tfds build {loader.name} --data_dir={searched[0]}`, '
        'or set TFDS_DATA_DIR to the data dir that holds it')

  def get_dataset(self, split=None, *args, **kwargs):
    self.check_prepared(split or 'train')
    return super().get_dataset(split, *args, **kwargs)

  def list_shards(self, split):
    self.check_prepared(split)
    return super().list_shards(split)

  def num_input_examples(self, split):
    self.check_prepared(split)
    return super().num_input_examples(split)


for _name, (_tfds_name, _document, _summary) in SUMMARIZATION_DATASETS.items():
  registration.add_summarization_task(
      _name,
      source=PreparedTfdsDataSource(tfds_name=_tfds_name, splits=SPLITS),
      vocabulary=vocabularies.SENTENCEPIECE_VOCABULARY,
      input_key=_document, target_key=_summary)

for _name, (_tfds_name, _text) in LANGUAGE_MODEL_DATASETS.items():
  registration.add_language_model_task(
      _name,
      source=PreparedTfdsDataSource(tfds_name=_tfds_name, splits=SPLITS),
      vocabulary=vocabularies.SENTENCEPIECE_VOCABULARY,
      text_key=_text)

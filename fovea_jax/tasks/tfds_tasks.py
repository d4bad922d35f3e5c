"""Benchmark tasks read through TensorFlow Datasets.

The data must already be prepared in the TFDS data dir (`TFDS_DATA_DIR`);
nothing is downloaded here. Tokens come from the SentencePiece model at
`paths.sentencepiece_model_path()`.
"""
from fovea_jax.tasks import registration
from fovea_jax.tasks import vocabularies
from fovea_jax.tensorflow_runtime import seqio

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

for _name, (_tfds_name, _document, _summary) in SUMMARIZATION_DATASETS.items():
  registration.add_summarization_task(
      _name,
      source=seqio.TfdsDataSource(tfds_name=_tfds_name),
      vocabulary=vocabularies.SENTENCEPIECE_VOCABULARY,
      input_key=_document, target_key=_summary)

for _name, (_tfds_name, _text) in LANGUAGE_MODEL_DATASETS.items():
  registration.add_language_model_task(
      _name,
      source=seqio.TfdsDataSource(tfds_name=_tfds_name),
      vocabulary=vocabularies.SENTENCEPIECE_VOCABULARY,
      text_key=_text)

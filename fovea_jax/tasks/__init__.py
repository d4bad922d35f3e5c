"""Importing this package registers every fovea_jax seqio task.

Summarization: `multi_news`, `pubmed`, `arxiv` (TFDS), `wcep10` (JSONL files),
`stdlib_summarization` and `stdlib_outline` (offline, byte level). Language
modelling: `pg19` (TFDS), `enwik8` (a local file, byte level), `stdlib_lm`
(offline, byte level).
Long-range diagnostics (generated, byte level, decoder-only):
`diagnostic_associative_recall`, `diagnostic_fact_retrieval`,
`diagnostic_frequent_symbol` and `diagnostic_mixture` (diagnostic_tasks.py).
Locations of data and SentencePiece models: see `paths.py`; the file formats
each task reads and the `DataError`s bad data gets: docs/data.md.
"""
from fovea_jax.tasks import diagnostic_tasks
from fovea_jax.tasks import file_tasks
from fovea_jax.tasks import stdlib_tasks
from fovea_jax.tasks import tfds_tasks
from fovea_jax.tasks.paths import enwik8_file
from fovea_jax.tasks.paths import sentencepiece_model_path
from fovea_jax.tasks.paths import wcep10_dir
from fovea_jax.tasks.stdlib_tasks import LANGUAGE_MODEL_TASK as STDLIB_LM_TASK
from fovea_jax.tasks.stdlib_tasks import SUMMARIZATION_TASK as STDLIB_SUMMARIZATION_TASK
from fovea_jax.tasks.stdlib_tasks import OUTLINE_TASK as STDLIB_OUTLINE_TASK

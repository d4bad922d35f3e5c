"""Input pipelines: `DatasetConfig` -> per-process batches, resumably."""
from fovea_jax.data.config import DatasetConfig
from fovea_jax.data.config import check_task_feature_lengths
from fovea_jax.data.config import get_mixture_or_task
from fovea_jax.data.iterator import DataIterator
from fovea_jax.data.pipeline import feature_converter_cls_for
from fovea_jax.data.pipeline import get_dataset
from fovea_jax.data.pipeline import make_feature_converter

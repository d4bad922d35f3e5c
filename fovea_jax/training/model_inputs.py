"""Shapes a model is built for, and an early check that it can serve them.

`input_shapes_and_types` turns a DatasetConfig into the model-feature shapes of
one global batch (through the model's seqio feature converter, so packing adds
segment ids and positions). `check_model_accepts` traces the model's loss on
those shapes without running it: a TASK_FEATURE_LENGTHS that the configured
attention cannot serve fails here, in seconds, naming the lengths.
"""
import functools
from typing import Any, Callable, Mapping

import jax
import numpy as np

from fovea_jax.data import pipeline
from fovea_jax.data.config import DatasetConfig
from fovea_jax.sharding import partitioner as partitioner_lib


def input_shapes_and_types(model: Any, cfg: DatasetConfig
                           ) -> tuple[dict, dict]:
  """({feature: global shape}, {feature: dtype}) of the model's batches."""
  converter = pipeline.make_feature_converter(
      cfg, getattr(model, 'FEATURE_CONVERTER_CLS', None))
  lengths = converter.get_model_feature_lengths(dict(cfg.task_feature_lengths))
  shapes = {name: (cfg.batch_size, length) for name, length in lengths.items()}
  types = {name: np.float32 if name == 'decoder_loss_weights' else np.int32
           for name in lengths}
  return shapes, types


def init_variables_fn(model: Any, shapes: Mapping, types: Mapping
                      ) -> Callable[[jax.Array], Any]:
  """`rng -> variables` of `model` built for these input shapes."""
  return functools.partial(model.get_initial_variables,
                           input_shapes=dict(shapes), input_types=dict(types))


def abstract_batch(shapes: Mapping[str, tuple], types: Mapping[str, Any]) -> dict:
  return {k: jax.ShapeDtypeStruct(shapes[k], types[k]) for k in shapes}


class ModelInputError(ValueError):
  """The model cannot run on the configured inputs (lengths, packing); the
  message names them and the options to change."""


def check_model_accepts(model: Any, init_variables_fn: Callable, shapes: Mapping,
                        types: Mapping, task_feature_lengths: Mapping,
                        partitioner: Any) -> None:
  """Traces init and loss_fn on the batch shapes (no compute); a failure raises
  ModelInputError naming the lengths (and packing)."""
  batch = abstract_batch(shapes, types)

  def init_and_loss(rng, batch):
    params = partitioner_lib.unbox(init_variables_fn(rng)['params'])
    return model.loss_fn(params, batch, None)

  try:
    with partitioner.activate():
      jax.eval_shape(init_and_loss, jax.random.PRNGKey(0), batch)
  except Exception as e:  # Any trace-time failure means these inputs cannot run.
    packed = any(key.endswith('_segment_ids') for key in shapes)
    inputs = f'TASK_FEATURE_LENGTHS={dict(task_feature_lengths)}'
    if packed:
      inputs += ' with packed examples (PACKING = True)'
    hint = _scheme_hint(model)
    if packed:
      hint += ' Or turn packing off: --gin.PACKING=False.'
    raise ModelInputError(f'{inputs} cannot be served by this model: '
                          f'{type(e).__name__}: {e}\n{hint}') from e


def _scheme_hint(model: Any) -> str:
  """Names the attention scheme's gin options, the usual thing to change."""
  config = getattr(getattr(model, 'module', None), 'config', None)
  scheme = getattr(config, 'scheme', None)
  if scheme is None:
    return 'Choose lengths the model supports or change its settings.'
  options = ', '.join(f'{k}={v!r}' for k, v in scheme.options().items()
                      if k != 'causal')
  return (f'The attention is {scheme.gin_name()}({options}): change one of its '
          f'options (--gin.{scheme.gin_name()}.<option>=...) or the lengths.')

"""Our networks inside T5X's own model wrapper and partitioner (skipped unless
T5X is installed: it is not on the package index)."""
import pathlib

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax import decoding
from fovea_jax import models

t5x_models = pytest.importorskip('t5x.models')
t5x_partitioning = pytest.importorskip('t5x.partitioning')
t5x_train_state = pytest.importorskip('t5x.train_state')

REPO = pathlib.Path(__file__).parents[2]
SEARCH_PATHS = (REPO / 'gin_configs', REPO / 'fovea_jax/t5x_compat/gin')


def _build(files):
  gin.clear_config()
  for path in SEARCH_PATHS:
    gin.add_config_file_search_path(str(path))
  try:
    gin.parse_config_files_and_bindings(files, ['DROPOUT_RATE = 0.0'],
                                        skip_unknown=False)
    model = gin.query_parameter('%MODEL').scoped_configurable_fn()
    rules = t5x_partitioning.standard_logical_axis_rules()
    return model, rules
  finally:
    gin.clear_config()


def test_t5x_encoder_decoder_model_runs_our_network():
  model, rules = _build(['sizes/tiny.gin', 'attention/fma.gin',
                         'encoder_decoder.gin'])
  assert isinstance(model, t5x_models.EncoderDecoderModel)
  batch = {
      'encoder_input_tokens': jnp.array([[5, 6, 7, 1] + [0] * 124] * 2),
      'decoder_input_tokens': jnp.array([[0, 3, 4, 5]] * 2),
      'decoder_target_tokens': jnp.array([[3, 4, 5, 1]] * 2),
      'decoder_loss_weights': jnp.ones((2, 4)),
  }
  shapes = {k: v.shape for k, v in batch.items()}
  variables = model.get_initial_variables(jax.random.PRNGKey(0), shapes)
  loss, _ = model.loss_fn(variables['params'], batch, None)
  assert np.isfinite(loss)
  decodes = model.predict_batch(variables['params'], batch)
  assert decodes.shape == (2, 4)
  # T5X's train state (its Adafactor reads every param's logical axes) and
  # its partitioner accept our axis names.
  state = t5x_train_state.FlaxOptimTrainState.create(model.optimizer_def,
                                                     variables)
  partitioner = t5x_partitioning.PjitPartitioner(num_partitions=2,
                                                 logical_axis_rules=rules)
  specs = partitioner.get_mesh_axes(state)
  assert specs.params['encoder']['layers_0']['mlp']['wi_0']['kernel'] == (
      jax.sharding.PartitionSpec(None, 'model'))


def test_t5x_decoder_only_predicts_like_ours():
  t5x_model, _ = _build(['sizes/decoder_only_tiny.gin', 'attention/fovea.gin',
                         'decoder_only.gin'])
  batch = {
      'decoder_input_tokens': jnp.array([[0, 5, 6, 9, 9, 0, 0, 0]] * 2),
      'decoder_target_tokens': jnp.array([[5, 6, 9, 9, 1, 0, 0, 0]] * 2),
      'decoder_causal_attention': jnp.array([[1, 1, 1, 0, 0, 0, 0, 0]] * 2),
      'decoder_loss_weights': jnp.array([[0, 0, 1, 1, 1, 0, 0, 0]] * 2,
                                        jnp.float32),
  }
  variables = t5x_model.get_initial_variables(
      jax.random.PRNGKey(0), {'decoder_input_tokens': (2, 8)})
  params = variables['params']
  theirs = t5x_model.predict_batch_with_aux(
      params, batch, decoder_params={'temperature': 0.0})[0]
  ours = models.DecoderOnlyModel(
      t5x_model.module, t5x_model.output_vocabulary,
      decode_fn=decoding.greedy_decode).predict_batch(params, batch)
  np.testing.assert_array_equal(theirs, ours)

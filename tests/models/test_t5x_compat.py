"""Our networks inside T5X's own model wrapper, partitioner, decoders and
trainer (skipped unless T5X is importable: it is not on the package index;
install it from its repository or put its source on PYTHONPATH)."""
import contextlib
import os
import pathlib
import subprocess
import sys

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
t5x_decoding = pytest.importorskip('t5x.decoding')

REPO = pathlib.Path(__file__).parents[2]
SEARCH_PATHS = (REPO / 'gin_configs', REPO / 'fovea_jax/t5x_compat/gin')


@contextlib.contextmanager
def _parsed(files, bindings=()):
  """Yields (%MODEL, T5X's logical axis rules) while the gin config is live:
  a gin-configured decode function reads its bindings when called."""
  gin.clear_config()
  for path in SEARCH_PATHS:
    gin.add_config_file_search_path(str(path))
  try:
    gin.parse_config_files_and_bindings(
        files, ['DROPOUT_RATE = 0.0', *bindings], skip_unknown=False)
    model = gin.query_parameter('%MODEL').scoped_configurable_fn()
    yield model, t5x_partitioning.standard_logical_axis_rules()
  finally:
    gin.clear_config()


def _build(files, bindings=()):
  with _parsed(files, bindings) as built:
    return built


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
  # T5X's beam search runs with our architecture file's BEAM_SIZE (4).
  beams, scores = model.predict_batch_with_aux(variables['params'], batch,
                                               return_all_decodes=True)
  assert beams.shape == (2, 4, 4) and scores['scores'].shape == (2, 4)
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
  # Several greedy decodes (T5X expands our cache per decode): all the same.
  several = t5x_model.predict_batch_with_aux(
      params, batch, decoder_params={'temperature': 0.0}, num_decodes=3,
      return_all_decodes=True)[0]
  assert several.shape == (2, 3, 8)
  for d in range(3):
    np.testing.assert_array_equal(several[:, d], ours)


def _decoder_only_batch():
  return {
      'decoder_input_tokens': jnp.array([[0, 5, 6, 9, 9, 0, 0, 0],
                                         [0, 7, 0, 0, 0, 0, 0, 0]]),
      'decoder_target_tokens': jnp.array([[5, 6, 9, 9, 1, 0, 0, 0],
                                          [7, 1, 0, 0, 0, 0, 0, 0]]),
      'decoder_causal_attention': jnp.array([[1, 1, 1, 0, 0, 0, 0, 0],
                                             [1, 1, 0, 0, 0, 0, 0, 0]]),
      'decoder_loss_weights': jnp.array([[0, 0, 1, 1, 1, 0, 0, 0],
                                         [0, 1, 1, 0, 0, 0, 0, 0]],
                                        jnp.float32),
  }


def test_t5x_samples_several_decodes_with_our_sampling_settings():
  """num_decodes > 1 over our empty cache (T5X's sampler expands it), with the
  top-k and temperature of our architecture file: every sample's score is its
  log-probability under that top-k distribution by the uncached full pass."""
  topk, temperature, num_decodes = 3, 0.7, 3
  with _parsed(['sizes/decoder_only_tiny.gin', 'attention/fovea.gin',
                'decoder_only.gin'],
               [f'SAMPLING_TOPK = {topk}',
                f'SAMPLING_TEMPERATURE = {temperature}']) as (t5x_model, _):
    batch = _decoder_only_batch()
    params = t5x_model.get_initial_variables(
        jax.random.PRNGKey(0), {'decoder_input_tokens': (2, 8)})['params']
    decodes, aux = jax.jit(
        t5x_model.predict_batch_with_aux,
        static_argnames=('num_decodes', 'return_all_decodes'))(
            params, batch, jax.random.PRNGKey(2), num_decodes=num_decodes,
            return_all_decodes=True)
  decodes, scores = np.asarray(decodes), np.asarray(aux['scores'])
  assert decodes.shape == (2, num_decodes, 8)
  prompts = np.asarray(batch['decoder_input_tokens'] *
                       batch['decoder_causal_attention'])
  ours = models.DecoderOnlyModel(t5x_model.module, t5x_model.output_vocabulary)
  for row in range(2):
    prompt = prompts[row][prompts[row] != 0]
    for d in range(num_decodes):
      generated = decodes[row, d]
      ended = np.flatnonzero(generated == 1)
      generated = generated[:ended[0] + 1 if ended.size else 8 - len(prompt)]
      full = np.concatenate([prompt, generated])[None]
      logits = ours._compute_logits(params, {  # pylint: disable=protected-access
          'decoder_input_tokens': np.pad(full[:, :-1], ((0, 0), (1, 0))),
          'decoder_target_tokens': np.ones_like(full)})[0, len(prompt):]
      scaled = np.asarray(logits) / temperature
      kth = np.sort(scaled, axis=-1)[:, -topk][:, None]
      log_probs = jax.nn.log_softmax(
          np.where(scaled < kth, t5x_decoding.NEG_INF, scaled))
      expected = np.take_along_axis(np.asarray(log_probs),
                                    generated[:, None], -1).sum()
      np.testing.assert_allclose(scores[row, d], expected, rtol=1e-4,
                                 atol=1e-4)
  # Sampling, not greedy: the decodes of a prompt differ.
  assert len({tuple(d) for d in decodes[1]}) > 1


def test_t5x_trains_our_lm_with_the_documented_command(tmp_path):
  """The command in decoder_only.gin's header (T5X's pretrain run file, then
  run_settings.gin: no task cache; packed, as T5X packs), two steps on one
  CPU."""
  t5x_root = pathlib.Path(t5x_models.__file__).parents[1]
  command = [
      sys.executable, '-m', 't5x.train',
      f'--gin_search_paths={REPO}/gin_configs,'
      f'{REPO}/fovea_jax/t5x_compat/gin,{t5x_root}',
      '--gin_file=sizes/decoder_only_tiny.gin',
      '--gin_file=attention/fovea.gin', '--gin_file=decoder_only.gin',
      '--gin_file=t5x/configs/runs/pretrain.gin',
      '--gin_file=run_settings.gin',
      f'--gin.MODEL_DIR="{tmp_path}"', '--gin.MIXTURE_OR_TASK_NAME="stdlib_lm"',
      "--gin.TASK_FEATURE_LENGTHS={'targets': 64}", '--gin.TRAIN_STEPS=2',
      '--gin.BATCH_SIZE=2', '--gin.utils.SaveCheckpointConfig.period=2',
      '--gin.train.eval_period=2', '--gin.train.eval_steps=1']
  # One CPU device (not the tests' eight fakes) for T5X's default mesh.
  env = dict(os.environ, XLA_FLAGS='', PYTHONPATH=os.pathsep.join(
      [str(REPO), str(t5x_root), os.environ.get('PYTHONPATH', '')]))
  done = subprocess.run(command, env=env, capture_output=True, text=True,
                        timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  assert (tmp_path / 'checkpoint_2').is_dir()

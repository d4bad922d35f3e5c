"""DecoderOnlyModel continues prompts over every scheme's cache: sampled
continuations (top-k, temperature, several per prompt, prompts of different
lengths) score exactly as the uncached full pass of the same network says, and
`prompt_batch` lays prompts out as seqio's prefix-LM feature converter does."""
import functools

import jax
import numpy as np
import pytest

from fovea_jax import decoding
from fovea_jax import models
from fovea_jax import networks
from fovea_jax.tensorflow_runtime import seqio
from fovea_jax.tensorflow_runtime import tf
from tests.networks.configs import random_variables, tiny_config

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

PROMPT, GENERATE = 8, 9  # odd lengths: no block size used divides them
LENGTH = PROMPT + GENERATE
TEMPERATURE, TOPK, NUM_DECODES = 0.8, 5, 2
EOS = 1
SCHEMES = ('dense', 'longt5_local', 'longt5_tglobal', 'fovea', 'fma',
           'masformer')


def _model(scheme):
  # MASFormer needs two layers for its schedule; one layer compiles faster.
  config = tiny_config(scheme,
                       num_decoder_layers=2 if scheme == 'masformer' else 1)
  return models.DecoderOnlyModel(
      networks.DecoderOnly(config),
      seqio.PassThroughVocabulary(size=config.vocab_size, eos_id=EOS),
      decode_fn=functools.partial(decoding.temperature_sample,
                                  temperature=TEMPERATURE, topk=TOPK))


def _prompts():
  prompts = np.zeros((2, PROMPT), np.int32)
  prompts[0] = np.arange(10, 10 + PROMPT)
  prompts[1, :3] = [7, 3, 9]
  return prompts


def _sampler_log_probs(logits):
  """log p of each token under temperature_sample's top-k distribution."""
  scaled = logits / TEMPERATURE
  kth = np.sort(scaled, axis=-1)[..., -TOPK][..., None]
  scaled = np.where(scaled < kth, decoding.NEG_INF, scaled)
  return np.asarray(jax.nn.log_softmax(scaled))


@pytest.mark.parametrize('scheme', SCHEMES)
def test_sampled_continuations_score_as_the_full_pass_says(scheme):
  model = _model(scheme)
  ones = np.ones((2, LENGTH), np.float32)
  params = random_variables(model.module, ones, ones,
                            enable_dropout=False)['params']
  prompts = _prompts()
  batch = model.prompt_batch(prompts, GENERATE)

  generated, scores = jax.device_get(jax.jit(functools.partial(
      model.predict_batch_with_aux, num_decodes=NUM_DECODES,
      return_all_decodes=True))(params, batch, jax.random.PRNGKey(1)))
  scores = scores['scores']
  assert generated.shape == (2, NUM_DECODES, LENGTH)
  # Rebuild each full sequence (prompt + continuation) and score it with one
  # uncached forward pass.
  lengths = (prompts != 0).sum(1)
  full = np.zeros((2, NUM_DECODES, LENGTH), np.int32)
  scored = np.zeros_like(full, dtype=bool)
  for row, n in enumerate(lengths):
    for d in range(NUM_DECODES):
      tokens = generated[row, d, :LENGTH - n]
      ended = np.flatnonzero(tokens == EOS)
      count = ended[0] + 1 if ended.size else LENGTH - n
      assert np.all(tokens[count:] == 0)
      full[row, d, :n] = prompts[row, :n]
      full[row, d, n:n + count] = tokens[:count]
      scored[row, d, n:n + count] = True
  assert scored[1].sum() > scored[0].sum()  # the shorter prompt got longer ones
  flat = full.reshape(-1, LENGTH)
  # Every key is real: sampling may pick id 0, which the cache does not mask.
  logits = jax.jit(model._compute_logits)(params, {  # pylint: disable=protected-access
      'decoder_input_tokens': np.pad(flat[:, :-1], ((0, 0), (1, 0))),
      'decoder_target_tokens': np.ones_like(flat)})
  log_probs = np.take_along_axis(_sampler_log_probs(np.asarray(logits)),
                                 flat[..., None], -1)[..., 0]
  expected = np.where(scored.reshape(-1, LENGTH), log_probs, 0).sum(-1)
  np.testing.assert_allclose(scores, expected.reshape(2, NUM_DECODES),
                             rtol=1e-4, atol=1e-4)
  # Sorted by increasing score; the two samples of a prompt differ.
  assert np.all(np.diff(scores, axis=1) >= 0)
  assert not np.array_equal(generated[0, 0], generated[0, 1])


def test_prompt_batch_lays_out_prompts_as_seqio_does():
  prompts = _prompts()
  ours = models.DecoderOnlyModel.prompt_batch(prompts, GENERATE)
  examples = tf.data.Dataset.from_tensor_slices({
      'inputs': tf.ragged.constant([p[p != 0] for p in prompts]),
      'targets': tf.ragged.constant([[0] * 0, [0] * 0], dtype=tf.int32)})
  converted = seqio.DecoderFeatureConverter(pack=False)(
      examples, {'inputs': PROMPT, 'targets': GENERATE})
  for row, theirs in enumerate(converted.as_numpy_iterator()):
    for name in ('decoder_input_tokens', 'decoder_causal_attention'):
      np.testing.assert_array_equal(ours[name][row], theirs[name])
  with pytest.raises(ValueError, match='num_generate'):
    models.DecoderOnlyModel.prompt_batch(prompts, 0)

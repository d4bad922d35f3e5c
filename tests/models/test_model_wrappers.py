"""EncoderDecoderModel / DecoderOnlyModel: loss and scores on a stand-in
network; cached decoding through the real gin-built tiny networks against the
teacher-forced full pass of the same network."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import standin_networks
from fovea_jax import decoding
from fovea_jax import models
from fovea_jax.layers import schemes
from fovea_jax.tensorflow_runtime import seqio
from gin_models import build_model

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

VOCAB = seqio.PassThroughVocabulary(size=16, eos_id=1)
TGLOBAL = schemes.LongT5TransientGlobal(local_radius=3, global_block_size=2)


def _encdec(decode_fn=decoding.greedy_decode, **kwargs):
  return models.EncoderDecoderModel(
      standin_networks.StandInEncoderDecoder(), VOCAB, VOCAB,
      decode_fn=decode_fn, **kwargs)


def _tiny(size, attention, decode_fn):
  """The tiny gin model, dropout off, with `attention` (a scheme spec small
  enough to matter on these short sequences) and `decode_fn`."""
  model = build_model([f'sizes/{size}.gin'], ['DROPOUT_RATE = 0.0'])
  module = type(model.module)(
      config=dataclasses.replace(model.module.config, attention=attention))
  if isinstance(model, models.DecoderOnlyModel):
    return models.DecoderOnlyModel(module, model.output_vocabulary,
                                   decode_fn=decode_fn)
  return models.EncoderDecoderModel(module, model.input_vocabulary,
                                    model.output_vocabulary,
                                    decode_fn=decode_fn)


def _batch():
  return {
      'encoder_input_tokens': jnp.array([[5, 6, 7, 8, 1, 0], [9, 4, 1, 0, 0,
                                                              0]]),
      'decoder_input_tokens': jnp.array([[0, 3, 4, 5, 0], [0, 7, 0, 0, 0]]),
      'decoder_target_tokens': jnp.array([[3, 4, 5, 1, 0], [7, 1, 0, 0, 0]]),
      'decoder_loss_weights': jnp.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]],
                                        jnp.float32),
  }


def _params(model, batch):
  shapes = {k: v.shape for k, v in batch.items()}
  variables = model.get_initial_variables(jax.random.PRNGKey(0), shapes)
  assert 'params_axes' in variables
  return variables['params']


def test_loss_metrics_and_scores():
  model = _encdec(z_loss=1e-3,
                  loss_normalizing_factor='NUM_REAL_TARGET_TOKENS')
  batch = _batch()
  params = _params(model, batch)

  @jax.jit  # one compilation for everything under test
  def run(params, batch):
    (loss, metrics), grads = jax.value_and_grad(
        lambda p: model.loss_fn(p, batch, None), has_aux=True)(params)
    scores, intermediates = model.score_batch(params, batch,
                                              return_intermediates=True)
    return dict(loss=loss, metrics=metrics, grads=grads, scores=scores,
                token_scores=intermediates['decoder']['token_scores'][0],
                logits=model._compute_logits(params, batch),
                eval_loss=model.eval_fn(params, batch)[0])

  out = run(params, batch)
  metrics = out['metrics']
  log_probs = jax.nn.log_softmax(out['logits'])
  token_ll = jnp.take_along_axis(log_probs,
                                 batch['decoder_target_tokens'][..., None],
                                 -1)[..., 0] * batch['decoder_loss_weights']
  np.testing.assert_allclose(metrics['cross_ent_loss'], -token_ll.sum() / 6,
                             rtol=1e-5)
  assert metrics['z_loss'] > 0
  np.testing.assert_allclose(out['loss'], metrics['cross_ent_loss'] +
                             metrics['z_loss'], rtol=1e-6)
  assert metrics['weight_sum'] == 6 and metrics['num_examples'] == 2
  # The loss is already a mean over the 6 real target tokens: the per-token
  # metric is that mean, not the mean divided by 6 again.
  np.testing.assert_allclose(metrics['loss_per_nonpadding_target_token'],
                             out['loss'] * 6 / metrics['nonpadding_tokens'],
                             rtol=1e-6)
  assert 0 <= metrics['accuracy'] <= 1
  np.testing.assert_allclose(out['scores'], token_ll.sum(-1), rtol=1e-5)
  np.testing.assert_allclose(out['token_scores'], token_ll, rtol=1e-5)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(out['grads']))
  np.testing.assert_allclose(out['eval_loss'], out['loss'], rtol=1e-6)


def _full_pass_greedy(model, params, batch, length):
  """Greedy decoding by re-running the whole teacher-forced pass per token."""
  rows = batch['encoder_input_tokens'].shape[0]
  decoded = np.zeros((rows, length), np.int32)
  ended = np.zeros(rows, bool)
  compute_logits = jax.jit(model._compute_logits)
  for t in range(length):
    decoder_inputs = np.concatenate([np.zeros((rows, 1), np.int32),
                                     decoded[:, :-1]], axis=1)
    logits = compute_logits(
        params, dict(batch, decoder_input_tokens=jnp.asarray(decoder_inputs),
                     # Targets only mark real positions (T5X masks on them).
                     decoder_target_tokens=jnp.ones_like(decoder_inputs)))
    tok = np.asarray(jnp.argmax(logits[:, t], -1))
    decoded[:, t] = np.where(ended, 0, tok)
    ended |= tok == VOCAB.eos_id
  return decoded


def test_cached_greedy_equals_full_pass():
  model = _tiny('tiny', TGLOBAL, decoding.greedy_decode)
  batch = _batch()
  params = _params(model, batch)
  predicted = jax.jit(model.predict_batch)(params, batch)
  np.testing.assert_array_equal(
      predicted, _full_pass_greedy(model, params, batch, 5))


def test_beam_search_scores_are_length_penalised_log_likelihoods():
  model = _tiny('tiny', TGLOBAL, decoding.beam_search)
  batch = _batch()
  params = _params(model, batch)
  decodes, aux = jax.jit(functools.partial(
      model.predict_batch_with_aux, num_decodes=3,
      return_all_decodes=True))(params, batch)
  assert decodes.shape == (2, 3, 5)
  best = np.asarray(decodes[:, -1])
  finished = np.any(best == 1, axis=1)
  # Length up to and including EOS; rows with no finished beam return their
  # live beam, scored without brevity penalty over the whole length.
  lengths = np.where(finished, np.argmax(best == 1, axis=1) + 1, 5)
  inputs = jnp.concatenate([jnp.zeros((2, 1), jnp.int32), best[:, :-1]], 1)
  weights = (np.arange(5)[None] < lengths[:, None]).astype(np.float32)
  ll = jax.jit(model.score_batch)(params, dict(batch, decoder_input_tokens=inputs,
                                      decoder_target_tokens=jnp.asarray(best),
                                      decoder_loss_weights=weights))
  penalty = np.where(finished, ((5.0 + lengths) / 6.0)**0.6, 1.0)
  np.testing.assert_allclose(aux['scores'][:, -1], ll / penalty, rtol=1e-4)
  assert np.all(np.diff(np.asarray(aux['scores']), axis=1) >= -1e-5)


def test_decoder_only_predict_continues_the_prompt():
  model = _tiny('decoder_only_tiny', schemes.Fovea(block_len=2),
                decoding.greedy_decode)
  # inputs [5, 6] then targets; decoder_causal_attention covers BOS + inputs.
  batch = {
      'decoder_input_tokens': jnp.array([[0, 5, 6, 9, 9, 9, 0, 0]]),
      'decoder_target_tokens': jnp.array([[5, 6, 9, 9, 9, 1, 0, 0]]),
      'decoder_causal_attention': jnp.array([[1, 1, 1, 0, 0, 0, 0, 0]]),
      'decoder_loss_weights': jnp.array([[0, 0, 1, 1, 1, 1, 0, 0]],
                                        jnp.float32),
  }
  params = _params(model, batch)
  predicted, aux = jax.jit(model.predict_batch_with_aux)(params, batch)
  # Reference: extend [0, 5, 6] greedily with full passes.
  tokens = [0, 5, 6]
  compute_logits = jax.jit(model._compute_logits)
  while len(tokens) < 9:
    x = jnp.array([tokens + [0] * (8 - len(tokens))])[:, :8]
    logits = compute_logits(params, {'decoder_input_tokens': x,
                                     'decoder_target_tokens': jnp.ones_like(x)})
    tok = int(jnp.argmax(logits[0, len(tokens) - 1]))
    tokens.append(tok)
    if tok == VOCAB.eos_id:
      break
  generated = tokens[3:]
  expected = (generated + [0] * 8)[:6] + [0, 0]
  np.testing.assert_array_equal(predicted[0], expected)
  assert np.isfinite(aux['scores'][0])
  with pytest.raises(ValueError, match='decoder_causal_attention'):
    model.predict_batch(params, {k: v for k, v in batch.items()
                                 if k != 'decoder_causal_attention'})


def test_bad_loss_settings_fail_at_construction():
  with pytest.raises(ValueError, match='NUM_REAL_TARGET_TOKENS'):
    _encdec(loss_normalizing_factor='per_token')
  with pytest.raises(ValueError, match='label_smoothing'):
    _encdec(label_smoothing=1.0)


def test_prefix_lm_loss_sees_the_inputs_bidirectionally():
  lm = _tiny('decoder_only_tiny', schemes.Dense(), decoding.greedy_decode)
  prefix_lm = models.DecoderOnlyModel(lm.module, lm.output_vocabulary,
                                      inputs_bidirectional_attention=True)
  batch = {
      'decoder_input_tokens': jnp.array([[0, 5, 6, 9, 9, 0]]),
      'decoder_target_tokens': jnp.array([[5, 6, 9, 9, 1, 0]]),
      'decoder_causal_attention': jnp.array([[1, 1, 1, 0, 0, 0]]),
      'decoder_loss_weights': jnp.array([[0, 0, 1, 1, 1, 0]], jnp.float32),
  }
  params = _params(lm, batch)
  causal_loss = lm.loss_fn(params, batch, None)[0]
  prefix_loss = prefix_lm.loss_fn(params, batch, None)[0]
  assert np.isfinite(prefix_loss) and abs(prefix_loss - causal_loss) > 1e-6
  no_prefix = {k: v for k, v in batch.items()
               if k != 'decoder_causal_attention'}
  with pytest.raises(ValueError, match='decoder_causal_attention'):
    prefix_lm.loss_fn(params, no_prefix, None)
  with pytest.raises(NotImplementedError, match='prefilled cache'):
    prefix_lm.predict_batch(params, batch)

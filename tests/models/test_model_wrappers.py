"""EncoderDecoderModel / DecoderOnlyModel: loss, scores and cached decoding
against the teacher-forced full pass of the same network."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

import standin_networks
from fovea_jax import decoding
from fovea_jax import models

VOCAB = seqio.PassThroughVocabulary(size=16, eos_id=1)


def _encdec(decode_fn=decoding.greedy_decode, **kwargs):
  return models.EncoderDecoderModel(
      standin_networks.StandInEncoderDecoder(), VOCAB, VOCAB,
      decode_fn=decode_fn, **kwargs)


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
  loss, metrics = model.loss_fn(params, batch, dropout_rng=None)
  logits = model._compute_logits(params, batch)
  log_probs = jax.nn.log_softmax(logits)
  token_ll = jnp.take_along_axis(log_probs,
                                 batch['decoder_target_tokens'][..., None],
                                 -1)[..., 0] * batch['decoder_loss_weights']
  np.testing.assert_allclose(metrics['cross_ent_loss'], -token_ll.sum() / 6,
                             rtol=1e-5)
  assert metrics['z_loss'] > 0
  np.testing.assert_allclose(loss, metrics['cross_ent_loss'] +
                             metrics['z_loss'], rtol=1e-6)
  assert metrics['weight_sum'] == 6 and metrics['num_examples'] == 2
  assert 0 <= metrics['accuracy'] <= 1
  np.testing.assert_allclose(model.score_batch(params, batch),
                             token_ll.sum(-1), rtol=1e-5)
  scores, intermediates = model.score_batch(params, batch,
                                            return_intermediates=True)
  np.testing.assert_allclose(intermediates['decoder']['token_scores'][0],
                             token_ll, rtol=1e-5)
  grads = jax.grad(lambda p: model.loss_fn(p, batch, None)[0])(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert model.eval_fn(params, batch)[0] == loss


def _full_pass_greedy(model, params, batch, length):
  """Greedy decoding by re-running the whole teacher-forced pass per token."""
  rows = batch['encoder_input_tokens'].shape[0]
  decoded = np.zeros((rows, length), np.int32)
  ended = np.zeros(rows, bool)
  for t in range(length):
    decoder_inputs = np.concatenate([np.zeros((rows, 1), np.int32),
                                     decoded[:, :-1]], axis=1)
    logits = model._compute_logits(
        params, dict(batch, decoder_input_tokens=jnp.asarray(decoder_inputs),
                     decoder_target_tokens=jnp.asarray(decoder_inputs)))
    tok = np.asarray(jnp.argmax(logits[:, t], -1))
    decoded[:, t] = np.where(ended, 0, tok)
    ended |= tok == VOCAB.eos_id
  return decoded


def test_cached_greedy_equals_full_pass():
  model = _encdec()
  batch = _batch()
  params = _params(model, batch)
  predicted = jax.jit(model.predict_batch)(params, batch)
  np.testing.assert_array_equal(
      predicted, _full_pass_greedy(model, params, batch, 5))


def test_beam_search_scores_are_length_penalised_log_likelihoods():
  model = _encdec(decode_fn=decoding.beam_search,
                  default_decoder_params={'num_decodes': 3})
  batch = _batch()
  params = _params(model, batch)
  decodes, aux = model.predict_batch_with_aux(params, batch,
                                              return_all_decodes=True)
  assert decodes.shape == (2, 3, 5)
  best = np.asarray(decodes[:, -1])
  finished = np.any(best == 1, axis=1)
  # Length up to and including EOS; rows with no finished beam return their
  # live beam, scored without brevity penalty over the whole length.
  lengths = np.where(finished, np.argmax(best == 1, axis=1) + 1, 5)
  inputs = jnp.concatenate([jnp.zeros((2, 1), jnp.int32), best[:, :-1]], 1)
  weights = (np.arange(5)[None] < lengths[:, None]).astype(np.float32)
  ll = model.score_batch(params, dict(batch, decoder_input_tokens=inputs,
                                      decoder_target_tokens=jnp.asarray(best),
                                      decoder_loss_weights=weights))
  penalty = np.where(finished, ((5.0 + lengths) / 6.0)**0.6, 1.0)
  np.testing.assert_allclose(aux['scores'][:, -1], ll / penalty, rtol=1e-4)
  assert np.all(np.diff(np.asarray(aux['scores']), axis=1) >= -1e-5)


def test_decoder_only_predict_continues_the_prompt():
  module = standin_networks.StandInDecoderOnly()
  model = models.DecoderOnlyModel(module, VOCAB,
                                  decode_fn=decoding.greedy_decode)
  # inputs [5, 6] then targets; decoder_causal_attention covers BOS + inputs.
  batch = {
      'decoder_input_tokens': jnp.array([[0, 5, 6, 9, 9, 9, 0, 0]]),
      'decoder_target_tokens': jnp.array([[5, 6, 9, 9, 9, 1, 0, 0]]),
      'decoder_causal_attention': jnp.array([[1, 1, 1, 0, 0, 0, 0, 0]]),
      'decoder_loss_weights': jnp.array([[0, 0, 1, 1, 1, 1, 0, 0]],
                                        jnp.float32),
  }
  params = _params(model, batch)
  predicted, aux = model.predict_batch_with_aux(params, batch)
  # Reference: extend [0, 5, 6] greedily with full passes.
  tokens = [0, 5, 6]
  while len(tokens) < 9:
    x = jnp.array([tokens + [0] * (8 - len(tokens))])[:, :8]
    logits = model._compute_logits(params, {'decoder_input_tokens': x,
                                            'decoder_target_tokens': x})
    tok = int(jnp.argmax(logits[0, len(tokens) - 1]))
    tokens.append(tok)
    if tok == VOCAB.eos_id:
      break
  generated = tokens[3:]
  expected = (generated + [0] * 8)[:6] + [0, 0]
  np.testing.assert_array_equal(predicted[0], expected)
  assert np.isfinite(aux['scores'][0])
  loss, _ = model.loss_fn(params, batch, jax.random.PRNGKey(1))
  assert np.isfinite(loss)
  with pytest.raises(ValueError, match='decoder_causal_attention'):
    model.predict_batch(params, {k: v for k, v in batch.items()
                                 if k != 'decoder_causal_attention'})

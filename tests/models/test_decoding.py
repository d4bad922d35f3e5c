"""Greedy, sampling and beam search on a second-order Markov 'network' whose
state lives in the cache, checked against exhaustive enumeration."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax import decoding

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

VOCAB = 4
EOS = 1


def _table(seed):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=(VOCAB, VOCAB, VOCAB)) * 2, jnp.float32)


def _markov(table):
  """tokens_to_logits whose logits depend on the previous token, which only
  the cache remembers: wrong cache expansion or beam gathering shows up."""

  def tokens_to_logits(state):
    cache = state.cache
    prev = cache['layer']['previous_token']
    cur = state.cur_token[:, 0]
    logits = table[prev, cur]
    new_cache = {'layer': {'previous_token': cur,
                           'cache_index': cache['layer']['cache_index'] + 1}}
    return logits, new_cache

  return tokens_to_logits


def _cache(rows):
  return {'layer': {'previous_token': jnp.zeros((rows,), jnp.int32),
                    'cache_index': jnp.zeros((), jnp.int32)}}


def _log_prob(table, seq):
  """Log-probability of `seq` (after BOS 0) and its length up to EOS."""
  prev, cur, total = 0, 0, 0.0
  for t, tok in enumerate(seq):
    total += float(jax.nn.log_softmax(table[prev, cur])[tok])
    prev, cur = cur, tok
    if tok == EOS:
      return total, t + 1
  return total, None


def test_greedy_follows_argmax_and_pads_after_eos():
  table = _table(0)
  length = 6
  seqs, scores = decoding.greedy_decode(
      jnp.zeros((2, length), jnp.int32), _cache(2), _markov(table), EOS)
  expected, prev, cur = [], 0, 0
  for _ in range(length):
    tok = int(jnp.argmax(table[prev, cur]))
    expected.append(tok)
    prev, cur = cur, tok
    if tok == EOS:
      break
  expected += [0] * (length - len(expected))
  assert seqs.shape == (2, 1, length)
  np.testing.assert_array_equal(seqs[0, 0], expected)
  np.testing.assert_array_equal(seqs[1, 0], expected)
  np.testing.assert_allclose(scores[0, 0], _log_prob(table, expected)[0],
                             rtol=1e-5)


def test_prompt_is_forced_and_max_decode_steps_respected():
  table = _table(1)
  inputs = jnp.array([[0, 3, 2, 0, 0, 0, 0]])
  seqs, _ = decoding.greedy_decode(inputs, _cache(1), _markov(table), EOS,
                                   max_decode_steps=2)
  assert list(seqs[0, 0, :2]) == [3, 2]
  assert np.count_nonzero(seqs[0, 0, 4:]) == 0


def test_sampling_top_k_and_num_decodes():
  table = _table(2)
  length = 5
  seqs, scores = decoding.temperature_sample(
      jnp.zeros((2, length), jnp.int32), _cache(2), _markov(table), EOS,
      decode_rng=jax.random.PRNGKey(3), num_decodes=6, temperature=1.0,
      topk=2)
  assert seqs.shape == (2, 6, length) and scores.shape == (2, 6)
  assert np.all(np.diff(np.asarray(scores), axis=1) >= 0)
  for row in np.asarray(seqs).reshape(-1, length):
    prev, cur = 0, 0
    for tok in row:
      top2 = np.argsort(np.asarray(table[prev, cur]))[-2:]
      assert tok in top2
      prev, cur = cur, int(tok)
      if tok == EOS:
        break
  # topk=1 sampling is greedy.
  sampled, _ = decoding.temperature_sample(
      jnp.zeros((1, length), jnp.int32), _cache(1), _markov(table), EOS,
      decode_rng=jax.random.PRNGKey(4), topk=1)
  greedy, _ = decoding.greedy_decode(jnp.zeros((1, length), jnp.int32),
                                     _cache(1), _markov(table), EOS)
  np.testing.assert_array_equal(sampled, greedy)


@pytest.mark.parametrize('seed', [0, 5])
def test_beam_search_finds_the_exhaustive_best(seed):
  table = _table(seed)
  length, alpha = 3, 0.6
  # 16 beams keep every prefix of length 2 alive, so the search is exact.
  seqs, scores = decoding.beam_search(
      jnp.zeros((1, length), jnp.int32), _cache(1), _markov(table), EOS,
      num_decodes=16, alpha=alpha)
  best_score, best_seq = -np.inf, None
  for seq in itertools.product(range(VOCAB), repeat=length):
    log_prob, end = _log_prob(table, seq)
    if end is None or any(seq[end:]):
      continue
    score = log_prob / ((5.0 + end) / 6.0)**alpha
    if score > best_score:
      best_score, best_seq = score, seq
  assert best_seq is not None
  np.testing.assert_allclose(scores[0, -1], best_score, rtol=1e-5)
  np.testing.assert_array_equal(seqs[0, -1], best_seq)
  assert np.all(np.diff(np.asarray(scores[0])) >= -1e-6)


def test_beam_expansion_keeps_rows_apart():
  table = _table(3)
  inputs = jnp.array([[0, 2, 0, 0], [0, 3, 0, 0]])
  both, _ = decoding.beam_search(inputs, _cache(2), _markov(table), EOS,
                                 num_decodes=3)
  for row in range(2):
    alone, _ = decoding.beam_search(inputs[row:row + 1], _cache(1),
                                    _markov(table), EOS, num_decodes=3)
    np.testing.assert_array_equal(both[row], alone[0])
  assert np.all(both[:, :, 0] == inputs[:, 1:2])


def test_remove_prefix():
  out = decoding.remove_prefix(jnp.array([[1, 2, 3, 4, 5, 0], [7, 8, 9, 0, 0,
                                                              0]]),
                               jnp.array([2, 1]))
  np.testing.assert_array_equal(out, [[3, 4, 5, 0, 0, 0], [8, 9, 0, 0, 0, 0]])

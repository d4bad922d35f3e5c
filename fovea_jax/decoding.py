"""Autoregressive decoding over a KV cache: greedy, temperature/top-k sampling
and beam search, with T5X's calling convention.

A decode function is called as
`decode_fn(inputs=..., cache=..., tokens_to_logits=..., eos_id=..., num_decodes=...,
**decoder_params)` and returns `(sequences [batch, num_decodes, length],
scores [batch, num_decodes])`, the `num_decodes` axis sorted by increasing score
(the best decode is `[:, -1]`). `inputs` holds the prompt: position 0 is BOS (0),
non-zero tokens after it are forced (teacher-forced through the cache), zeros are
free to generate. `tokens_to_logits(DecodingState) -> (logits [rows, vocab],
new_cache)` runs one step of the network.

Cache convention (shared with fovea_jax.networks): every cache leaf with at least
one dimension has a leading batch axis, so beams and samples are made by
expanding it in place ([b0, b1] -> [b0, b0, b1, b1]); scalar leaves such as the
step counter `cache_index`, and the per-example cross-attention keys/values
(`_SHARED_CACHE_LEAVES`), are shared by all rows.
"""
import functools
from collections.abc import Callable, Mapping
from typing import Any

import gin
import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

# "Effectively minus infinity" for masked scores; finite so sums stay finite.
NEG_INF = -1.0e7
# Temperatures below this sample greedily (argmax) instead of dividing by ~0.
MIN_TEMPERATURE = 1e-4
# Cache leaves that are shared by all rows even if they have dimensions; the
# cross-attention keys/values (`MultiHeadAttention.static_kv`) have one entry per
# example, read by all of its decodes.
_SHARED_CACHE_LEAVES = ('cached_bias', 'position_embedder_index',
                        'cached_static_key', 'cached_static_value',
                        'static_kv_ready')


@flax.struct.dataclass
class DecodingState:
  """What `tokens_to_logits` sees at each step.

  Attributes:
    cur_index: `[rows]` position of `cur_token` in the sequence.
    sequences: `[rows, length]` tokens so far (BOS at 0).
    cur_token: `[rows, 1]` the token to feed.
    cache: the network's cache collection.
  """
  cur_index: jnp.ndarray
  sequences: jnp.ndarray
  cur_token: jnp.ndarray
  cache: Mapping[str, Any]


TokensToLogits = Callable[[DecodingState], tuple[jnp.ndarray, Any]]

# ----------------------------------------------------------------- beam utils


def cache_map(fn: Callable, cache, apply_to_index: bool = False):
  """Applies `fn` to every per-row cache leaf (see the module docstring)."""
  frozen = isinstance(cache, flax.core.FrozenDict)
  flat = traverse_util.flatten_dict(flax.core.unfreeze(cache))
  out = {}
  for key, leaf in flat.items():
    per_row = (np.ndim(leaf) > 0 and key[-1] not in _SHARED_CACHE_LEAVES and
               (apply_to_index or key[-1] != 'cache_index'))
    out[key] = fn(leaf) if per_row else leaf
  out = traverse_util.unflatten_dict(out)
  return flax.core.freeze(out) if frozen else out


def mark_static_kv_filled(cache):
  """The cache without its `static_kv_ready` flags: for a cache whose
  cross-attention keys and values were projected from the real encoding when it
  was created, so decoding steps only read them (see
  `MultiHeadAttention._static_kv_step`)."""
  frozen = isinstance(cache, flax.core.FrozenDict)
  flat = traverse_util.flatten_dict(flax.core.unfreeze(cache))
  out = traverse_util.unflatten_dict(
      {key: leaf for key, leaf in flat.items() if key[-1] != 'static_kv_ready'})
  return flax.core.freeze(out) if frozen else out


def add_beam_dim(x: jnp.ndarray, beam_size: int, offset: int = 0):
  """`[batch, ...] -> [batch, beam, ...]` by repetition."""
  x = jnp.expand_dims(x, offset + 1)
  reps = [1] * x.ndim
  reps[offset + 1] = beam_size
  return jnp.tile(x, reps)


def flatten_beam_dim(x: jnp.ndarray, offset: int = 0):
  """`[batch, beam, ...] -> [batch * beam, ...]`."""
  shape = x.shape
  return x.reshape(shape[:offset] + (shape[offset] * shape[offset + 1],) +
                   shape[offset + 2:])


def unflatten_beam_dim(x: jnp.ndarray, batch_size: int, beam_size: int,
                       offset: int = 0):
  """`[batch * beam, ...] -> [batch, beam, ...]`."""
  shape = x.shape
  if shape[offset] != batch_size * beam_size:
    raise ValueError(f'Leading dim {shape[offset]} is not batch {batch_size} '
                     f'x beams {beam_size}.')
  return x.reshape(shape[:offset] + (batch_size, beam_size) +
                   shape[offset + 1:])


def flat_batch_beam_expand(x: jnp.ndarray, beam_size: int, offset: int = 0):
  """`[b0, b1] -> [b0, b0, b1, b1]` along the batch axis."""
  return flatten_beam_dim(add_beam_dim(x, beam_size, offset), offset)


def gather_beams(nested, beam_indices: jnp.ndarray, old_beam_size: int):
  """Picks `[batch, new_beams]` beam slices out of `[batch, old_beams, ...]`.

  A one-hot contraction rather than a gather so that SPMD partitioning keeps the
  batch axis sharded.
  """
  one_hot = jax.nn.one_hot(beam_indices, old_beam_size, dtype=jnp.int32)

  def gather(x):
    if x.dtype == jnp.bool_:
      return jnp.einsum('beo,bo...->be...', one_hot, x.astype(jnp.int32)) > 0
    return jnp.einsum('beo,bo...->be...', one_hot, x).astype(x.dtype)

  return jax.tree.map(gather, nested)


def brevity_penalty(alpha: float, length) -> jnp.ndarray:
  """GNMT length penalty ((5 + length) / 6) ** alpha."""
  return jnp.power((5.0 + length) / 6.0, alpha)


# ------------------------------------------------------------------ sampling


def _top_k_mask(logits: jnp.ndarray, topk: int) -> jnp.ndarray:
  kth_largest = jax.lax.top_k(logits, topk)[0][..., -1:]
  return jnp.where(logits < kth_largest, NEG_INF, logits)


@gin.configurable
def temperature_sample(inputs: jnp.ndarray,
                       cache: Mapping[str, Any],
                       tokens_to_logits: TokensToLogits,
                       eos_id: int,
                       decode_rng: jnp.ndarray | None = None,
                       num_decodes: int = 1,
                       temperature: float | jnp.ndarray = 1.0,
                       topk: int = 1,
                       cache_offset: int = 0,
                       initial_index: jnp.ndarray | None = None,
                       max_decode_steps: int | None = None):
  """Samples `num_decodes` continuations per row.

  Args:
    inputs: `[batch, length]` prompt (see module docstring); `length` is also
      the output length.
    cache: the network's initialised (or prefilled) cache for `batch` rows.
    tokens_to_logits: one decoding step.
    eos_id: a generated `eos_id` ends a row; later positions stay 0.
    decode_rng: PRNG key (default key 0).
    num_decodes: samples per row (the cache is expanded in place).
    temperature: divides the logits; below `MIN_TEMPERATURE` means greedy.
    topk: sample among the `topk` most likely tokens only (0: all).
    cache_offset: axis of the batch dim in cache leaves (1 for scanned layers).
    initial_index: `[batch]` positions already in a prefilled cache (the token
      at `initial_index` is fed first); None starts at 0.
    max_decode_steps: stop each row after this many generated tokens.

  Returns:
    `(sequences [batch, num_decodes, length], log_probs [batch, num_decodes])`,
    sorted by increasing log-probability (under the sampling distribution).
  """
  batch_size, length = inputs.shape
  if decode_rng is None:
    decode_rng = jax.random.PRNGKey(0)
  if num_decodes > 1:
    inputs = flat_batch_beam_expand(inputs, num_decodes)
    cache = cache_map(
        lambda x: flat_batch_beam_expand(x, num_decodes, cache_offset), cache,
        apply_to_index=initial_index is not None)
    if initial_index is not None:
      initial_index = flat_batch_beam_expand(initial_index, num_decodes)
  rows = inputs.shape[0]
  # One spare column so position `length` (the last output token) exists.
  sequences = jnp.concatenate(
      [inputs.astype(jnp.int32), jnp.zeros((rows, 1), jnp.int32)], axis=1)
  start = (jnp.zeros((rows,), jnp.int32)
           if initial_index is None else initial_index.astype(jnp.int32))
  # The last position each row may write: the end, or the prompt plus budget.
  last_position = jnp.full((rows,), length, jnp.int32)
  if max_decode_steps is not None:
    prompt_len = jnp.sum(inputs != 0, axis=1).astype(jnp.int32)
    last_position = jnp.minimum(last_position, prompt_len + max_decode_steps)
  temperature = jnp.asarray(temperature, jnp.float32)
  row_ids = jnp.arange(rows)

  def cond(state):
    return ~jnp.all(state['ended'])

  def body(state):
    cur_index = state['cur_index']
    rng, step_rng = jax.random.split(state['rng'])
    cur_token = state['sequences'][row_ids, cur_index][:, None]
    logits, new_cache = tokens_to_logits(
        DecodingState(cur_index=cur_index,
                      sequences=state['sequences'][:, :length],
                      cur_token=cur_token, cache=state['cache']))
    logits = logits.astype(jnp.float32)
    greedy = temperature < MIN_TEMPERATURE
    scaled = logits / jnp.maximum(temperature, MIN_TEMPERATURE)
    if topk:
      scaled = _top_k_mask(scaled, topk)
    sampled = jnp.where(greedy, jnp.argmax(logits, axis=-1),
                        jax.random.categorical(step_rng, scaled)).astype(
                            jnp.int32)
    log_probs = jnp.where(greedy, jax.nn.log_softmax(logits),
                          jax.nn.log_softmax(scaled))
    next_index = cur_index + 1
    forced = state['sequences'][row_ids, next_index]
    generating = (forced == 0) & ~state['ended']
    token = jnp.where(generating, sampled, forced)
    token = jnp.where(state['ended'], 0, token)
    token_log_prob = log_probs[row_ids, token]
    log_prob = state['log_prob'] + jnp.where(generating, token_log_prob, 0.0)
    # Ended rows keep their sequence; the write goes to their own last column.
    write_at = jnp.where(state['ended'], length, next_index)
    keep = state['sequences'][row_ids, write_at]
    sequences = state['sequences'].at[row_ids, write_at].set(
        jnp.where(state['ended'], keep, token))
    ended = (state['ended'] | (generating & (token == eos_id)) |
             (next_index >= last_position))
    return dict(cur_index=jnp.minimum(next_index, length),
                sequences=sequences, cache=new_cache, ended=ended, rng=rng,
                log_prob=log_prob)

  init = dict(cur_index=start, sequences=sequences, cache=cache,
              ended=start >= last_position, rng=decode_rng,
              log_prob=jnp.zeros((rows,), jnp.float32))
  final = jax.lax.while_loop(cond, body, init)
  # Drop BOS; column `length` (the spare) is the last output position.
  out = final['sequences'][:, 1:]
  out = unflatten_beam_dim(out, batch_size, num_decodes)
  scores = unflatten_beam_dim(final['log_prob'], batch_size, num_decodes)
  order = jnp.argsort(scores, axis=1)
  return (jnp.take_along_axis(out, order[:, :, None], axis=1),
          jnp.take_along_axis(scores, order, axis=1))


@gin.configurable
def greedy_decode(inputs, cache, tokens_to_logits, eos_id, **kwargs):
  """Most likely token at every step: `temperature_sample` at temperature 0."""
  kwargs.pop('temperature', None)
  kwargs.pop('topk', None)
  return temperature_sample(inputs, cache, tokens_to_logits, eos_id,
                            temperature=0.0, topk=0, **kwargs)


# --------------------------------------------------------------- beam search


@gin.configurable
def beam_search(inputs: jnp.ndarray,
                cache: Mapping[str, Any],
                tokens_to_logits: TokensToLogits,
                eos_id: int,
                num_decodes: int = 4,
                alpha: float = 0.6,
                max_decode_len: int | None = None,
                decode_rng: jnp.ndarray | None = None,
                cache_offset: int = 0,
                initial_index: jnp.ndarray | None = None):
  """Beam search with a GNMT brevity penalty (T5X's algorithm).

  Keeps `num_decodes` live beams and the `num_decodes` best finished ones. At
  each step the top `2 * beams` extensions are taken so that enough stay alive
  even if `beams` of them end with EOS. Non-zero `inputs` after BOS are forced
  (one live beam while inside the prompt).

  Returns:
    `(sequences [batch, beams, length], scores [batch, beams])`, increasing
    score; rows without any finished beam return their live beams.
  """
  del decode_rng  # deterministic
  if initial_index is not None:
    raise NotImplementedError(
        'beam_search teacher-forces prompts through the cache and does not '
        'start from a prefilled cache: pass initial_index=None.')
  beams = num_decodes
  batch_size = inputs.shape[0]
  length = inputs.shape[1] if max_decode_len is None else max_decode_len
  # Sequences carry BOS at 0, so they are one longer than the output.
  seq_len = length + 1
  inputs = jnp.pad(inputs.astype(jnp.int32),
                   ((0, 0), (0, max(0, seq_len - inputs.shape[1]))))

  live_seqs = jnp.zeros((batch_size, beams, seq_len), jnp.int32)
  live_log_probs = jnp.tile(
      jnp.array([0.0] + [NEG_INF] * (beams - 1), jnp.float32),
      (batch_size, 1))
  state = dict(
      cur_index=jnp.zeros((), jnp.int32),
      live_seqs=live_seqs,
      live_log_probs=live_log_probs,
      finished_seqs=jnp.zeros_like(live_seqs),
      finished_scores=jnp.full((batch_size, beams), NEG_INF, jnp.float32),
      finished_flags=jnp.zeros((batch_size, beams), jnp.bool_),
      cache=cache_map(lambda x: add_beam_dim(x, beams, cache_offset), cache))

  def cond(state):
    not_at_end = state['cur_index'] < seq_len - 1
    # Stop early when no live beam can beat the worst finished one even with
    # the most favourable (longest) brevity penalty.
    best_live = state['live_log_probs'][:, -1:] / brevity_penalty(
        alpha, seq_len - 1)
    worst_finished = jnp.where(
        state['finished_flags'],
        jnp.min(state['finished_scores'], axis=1, keepdims=True), NEG_INF)
    done = jnp.all(worst_finished > best_live)
    return not_at_end & ~done

  def body(state):
    i = state['cur_index']
    flat_ids = flatten_beam_dim(
        jax.lax.dynamic_slice_in_dim(state['live_seqs'], i, 1, axis=2))
    flat_cache = cache_map(
        functools.partial(flatten_beam_dim, offset=cache_offset),
        state['cache'])
    flat_logits, new_flat_cache = tokens_to_logits(
        DecodingState(cur_index=jnp.full((batch_size * beams,), i),
                      sequences=flatten_beam_dim(state['live_seqs']),
                      cur_token=flat_ids, cache=flat_cache))
    logits = unflatten_beam_dim(flat_logits.astype(jnp.float32), batch_size,
                                beams)
    new_cache = cache_map(
        lambda x: unflatten_beam_dim(x, batch_size, beams, cache_offset),
        new_flat_cache)
    vocab = logits.shape[-1]
    candidates = (jax.nn.log_softmax(logits) +
                  state['live_log_probs'][:, :, None]).reshape(
                      batch_size, beams * vocab)
    keep = 2 * beams
    top_log_probs, top_indices = jax.lax.top_k(candidates, keep)
    top_ids = top_indices % vocab
    top_beam = top_indices // vocab
    # Inside the prompt: the forced token, one live beam.
    forced = jax.lax.dynamic_slice_in_dim(inputs, i + 1, 1, axis=1)
    in_prompt = forced != 0
    prompt_log_probs = jnp.concatenate(
        [jnp.zeros((batch_size, 1)), jnp.full((batch_size, keep - 1), NEG_INF)],
        axis=1)
    top_log_probs = jnp.where(in_prompt, prompt_log_probs, top_log_probs)
    top_ids = jnp.where(in_prompt, forced, top_ids)
    top_seqs = gather_beams(state['live_seqs'], top_beam, beams)
    top_seqs = jax.lax.dynamic_update_slice(top_seqs, top_ids[:, :, None],
                                            (0, 0, i + 1))
    newly_finished = top_ids == eos_id

    # Live: best `beams` of the 2*beams that did not just end.
    alive_log_probs = top_log_probs + newly_finished * NEG_INF
    alive_pick = jnp.flip(jax.lax.top_k(alive_log_probs, beams)[1], axis=1)
    live_seqs, live_log_probs, live_parent = gather_beams(
        [top_seqs, alive_log_probs, top_beam], alive_pick, keep)
    cache = cache_map(
        lambda x: _gather_cache(x, live_parent, beams, cache_offset), new_cache)

    # Finished: merge the new enders into the best `beams` so far.
    scores = top_log_probs / brevity_penalty(alpha, i + 1)
    scores = jnp.where(newly_finished, scores, NEG_INF)
    all_seqs = jnp.concatenate([state['finished_seqs'], top_seqs], axis=1)
    all_scores = jnp.concatenate([state['finished_scores'], scores], axis=1)
    all_flags = jnp.concatenate([state['finished_flags'], newly_finished],
                                axis=1)
    finished_pick = jnp.flip(jax.lax.top_k(all_scores, beams)[1], axis=1)
    finished_seqs, finished_scores, finished_flags = gather_beams(
        [all_seqs, all_scores, all_flags], finished_pick, 3 * beams)
    return dict(cur_index=i + 1, live_seqs=live_seqs,
                live_log_probs=live_log_probs, finished_seqs=finished_seqs,
                finished_scores=finished_scores, finished_flags=finished_flags,
                cache=cache)

  final = jax.lax.while_loop(cond, body, state)
  any_finished = jnp.any(final['finished_flags'], axis=1)
  seqs = jnp.where(any_finished[:, None, None], final['finished_seqs'],
                   final['live_seqs'])
  scores = jnp.where(any_finished[:, None], final['finished_scores'],
                     final['live_log_probs'])
  return seqs[:, :, 1:], scores


def _gather_cache(x, parent_beams, beams, offset):
  if offset == 0:
    return gather_beams(x, parent_beams, beams)
  one_hot = jax.nn.one_hot(parent_beams, beams, dtype=jnp.int32)
  return jnp.einsum('beo,lbo...->lbe...', one_hot, x).astype(x.dtype)


@jax.vmap
def remove_prefix(sequence: jnp.ndarray, prefix_length: jnp.ndarray):
  """Drops a row's first `prefix_length` tokens and shifts the rest left,
  zero-filling the end (pad id 0)."""
  positions = jnp.arange(sequence.shape[-1])
  kept = jnp.where(positions >= prefix_length, sequence, 0)
  return jnp.roll(kept, -prefix_length, axis=-1)

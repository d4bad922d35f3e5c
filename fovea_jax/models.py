"""Model wrappers: what trainers, evaluators and exporters call (T5X's API).

`EncoderDecoderModel` and `DecoderOnlyModel` wrap a Flax Linen network with the
T5X module interface (docs/framework.md#the-t5x-model-interface) and give it `loss_fn`,
`eval_fn`, `score_batch`, `predict_batch`/`predict_batch_with_aux` (decoding over
the KV cache with a pluggable `decode_fn`, see fovea_jax.decoding) and
`get_initial_variables`, with T5X's names and semantics. The optimizer is not
here: the trainer owns it.

Metrics are plain scalar arrays (sums over the batch, so microbatches add up;
`accuracy` and `loss_per_nonpadding_target_token` are ratios for the batch):
`loss`, `z_loss`, `cross_ent_loss`, `accuracy`, `correct_tokens`, `weight_sum`,
`num_tokens`, `num_examples`, `loss_per_nonpadding_target_token`.
"""
import functools
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import gin
import jax
import jax.numpy as jnp
from flax import core as flax_core

from fovea_jax import decoding
from fovea_jax import losses
from fovea_jax.tensorflow_runtime import seqio

Batch = Mapping[str, jnp.ndarray]
PyTree = Any


def count_packed_examples(segment_ids: jnp.ndarray) -> jnp.ndarray:
  """Examples in a `[batch, length]` segment-id array (0 = padding)."""
  changes = jnp.sum(jnp.diff(segment_ids, axis=1) != 0)
  padded_rows_end = jnp.sum(segment_ids[:, -1] == 0)
  return changes + segment_ids.shape[0] - padded_rows_end


def compute_base_metrics(logits, targets, weights, loss, z_loss,
                         segment_ids: jnp.ndarray | None = None,
                         loss_sum: jnp.ndarray | None = None
                         ) -> dict[str, jnp.ndarray]:
  """The scalar metrics listed in the module docstring.

  loss_sum: the weighted loss summed over tokens before the loss-normalizing
  factor (default: `loss`, i.e. no factor); `loss_per_nonpadding_target_token`
  divides it, not the normalised loss, by the non-padding token count.
  """
  loss_sum = loss if loss_sum is None else loss_sum
  weights = (jnp.ones(targets.shape, jnp.float32)
             if weights is None else weights.astype(jnp.float32))
  correct = jnp.sum((jnp.argmax(logits, -1) == targets) * (weights > 0))
  nonpadding = jnp.sum(weights > 0)
  num_examples = (jnp.asarray(targets.shape[0]) if segment_ids is None else
                  count_packed_examples(segment_ids))
  return {
      'loss': loss,
      'z_loss': z_loss,
      'cross_ent_loss': loss - z_loss,
      'accuracy': correct / jnp.maximum(nonpadding, 1),
      'correct_tokens': correct.astype(jnp.float32),
      'weight_sum': jnp.sum(weights),
      'num_tokens': jnp.asarray(targets.size, jnp.float32),
      'nonpadding_tokens': nonpadding.astype(jnp.float32),
      'num_examples': jnp.asarray(num_examples, jnp.float32),
      'loss_per_nonpadding_target_token': (
          loss_sum / jnp.maximum(nonpadding, 1)),
  }


class BaseTransformerModel:
  """Loss and scoring shared by both wrappers; subclasses supply the forward
  pass (`_compute_logits`), decoding and initialisation."""

  FEATURE_CONVERTER_CLS: Callable[..., seqio.FeatureConverter]

  def __init__(self, module, input_vocabulary, output_vocabulary,
               decode_fn: Callable | None = None,
               label_smoothing: float = 0.0,
               z_loss: float = 0.0,
               loss_normalizing_factor: float | str | None = None,
               feature_converter_cls: Callable | None = None):
    if not 0.0 <= label_smoothing < 1.0:
      raise ValueError(f'label_smoothing must be in [0, 1), got '
                       f'{label_smoothing}.')
    if isinstance(loss_normalizing_factor, str):  # fail at build, not at step 1
      losses.as_special_loss_normalizing_factor(loss_normalizing_factor)
    if feature_converter_cls is not None:
      self.FEATURE_CONVERTER_CLS = feature_converter_cls
    self.module = module
    self._input_vocabulary = input_vocabulary
    self._output_vocabulary = output_vocabulary
    self._decode_fn = decode_fn
    self._label_smoothing = label_smoothing
    self._z_loss = z_loss
    self._loss_normalizing_factor = loss_normalizing_factor

  @property
  def input_vocabulary(self):
    return self._input_vocabulary

  @property
  def output_vocabulary(self):
    return self._output_vocabulary

  @property
  def decode_fn(self):
    return self._decode_fn

  def _compute_logits(self, params, batch, dropout_rng=None, mutable=False,
                      other_variables=None):
    raise NotImplementedError

  def loss_fn(self, params: PyTree, batch: Batch,
              dropout_rng: jax.Array | None) -> tuple[jnp.ndarray, dict]:
    """Cross-entropy (+ z-loss, label smoothing) of the teacher-forced pass.

    Dropout is on iff `dropout_rng` is given. Returns `(loss, metrics)`.
    """
    logits = self._compute_logits(params, batch, dropout_rng)
    factor, weights = losses.get_loss_normalizing_factor_and_weights(
        self._loss_normalizing_factor, batch)
    # Summed first, normalised after: the per-token metric needs the sum (the
    # normalised loss is already a mean under NUM_REAL_TARGET_TOKENS).
    loss_sum, z_loss_sum, _ = losses.compute_weighted_cross_entropy(
        logits, batch['decoder_target_tokens'], weights,
        label_smoothing=self._label_smoothing, z_loss=self._z_loss)
    loss, z_loss = ((loss_sum, z_loss_sum) if factor is None else
                    (loss_sum / factor, z_loss_sum / factor))
    if weights is None:
      weights = batch['decoder_target_tokens'] > 0
    metrics = compute_base_metrics(logits, batch['decoder_target_tokens'],
                                   weights, loss, z_loss,
                                   batch.get('decoder_segment_ids'),
                                   loss_sum=loss_sum)
    return loss, metrics

  def eval_fn(self, params: PyTree, batch: Batch) -> tuple[jnp.ndarray, dict]:
    """`loss_fn` without dropout."""
    return self.loss_fn(params, batch, dropout_rng=None)

  def score_batch(self, params: PyTree, batch: Batch,
                  return_intermediates: bool = False):
    """Log-likelihood of `decoder_target_tokens` per example, `[batch]`.

    Weighted by `decoder_loss_weights` (T5X requires it in the batch; when it is
    missing, non-zero targets count). No z-loss, no label smoothing.
    """
    targets = batch['decoder_target_tokens']
    weights = batch.get('decoder_loss_weights')
    if weights is None:
      weights = (targets > 0).astype(jnp.float32)
    if return_intermediates:
      logits, state = self._compute_logits(params, batch,
                                           mutable=['intermediates'])
      intermediates = flax_core.unfreeze(state.get('intermediates', {}))
    else:
      logits = self._compute_logits(params, batch)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    token_scores = jnp.take_along_axis(log_probs, targets[..., None],
                                       axis=-1)[..., 0] * weights
    sequence_scores = token_scores.sum(-1)
    if not return_intermediates:
      return sequence_scores
    decoder = intermediates.setdefault('decoder', {})
    decoder['target_tokens'] = (targets,)
    decoder['loss_weights'] = (weights,)
    decoder['token_scores'] = (token_scores,)
    # 1 where the target is the most likely token: a teacher-forced answer is
    # what greedy decoding would produce when all its tokens are top-1.
    decoder['token_top1'] = (
        (jnp.argmax(logits, axis=-1) == targets).astype(jnp.int32),)
    return sequence_scores, intermediates

  def predict_batch(self, params: PyTree, batch: Batch,
                    rng: jax.Array | None = None) -> jnp.ndarray:
    return self.predict_batch_with_aux(params, batch, rng=rng)[0]

  def _decode_params(self, decoder_params, rng) -> dict:
    decoder_params = dict(decoder_params or {})
    if rng is not None:
      if decoder_params.get('decode_rng') is not None:
        raise ValueError('Got an RNG both as `rng` and as '
                         "decoder_params['decode_rng']: give only one.")
      decoder_params['decode_rng'] = rng
    decoder_params.setdefault('eos_id',
                              getattr(self.output_vocabulary, 'eos_id', 1) or 1)
    return decoder_params


def _ones(shapes, types, name, default_dtype):
  if name not in shapes:
    return None
  return jnp.ones(shapes[name], types.get(name, default_dtype))


@gin.configurable
class EncoderDecoderModel(BaseTransformerModel):
  """An encoder-decoder network (LongT5 layout) as a T5X model.

  Args:
    module: the network (`__call__`, `encode`, `decode` as in T5X).
    input_vocabulary, output_vocabulary: seqio vocabularies.
    decode_fn: a fovea_jax.decoding function (default beam search).
    label_smoothing, z_loss, loss_normalizing_factor: see fovea_jax.losses.
    default_decoder_params: `{'num_decodes': ..., 'return_all_decodes': ...}`.
  """

  FEATURE_CONVERTER_CLS = seqio.EncDecFeatureConverter

  def __init__(self, module, input_vocabulary, output_vocabulary,
               decode_fn: Callable = decoding.beam_search,
               label_smoothing: float = 0.0, z_loss: float = 0.0,
               loss_normalizing_factor=None,
               default_decoder_params: Mapping[str, Any] | None = None,
               feature_converter_cls=None):
    super().__init__(module, input_vocabulary, output_vocabulary, decode_fn,
                     label_smoothing, z_loss, loss_normalizing_factor,
                     feature_converter_cls)
    self._default_decoder_params = dict(num_decodes=1,
                                        return_all_decodes=False)
    self._default_decoder_params.update(default_decoder_params or {})

  def get_initial_variables(self, rng: jax.Array,
                            input_shapes: Mapping[str, tuple[int, ...]],
                            input_types: Mapping[str, Any] | None = None):
    """`module.init` on ones of the given shapes (float tokens, as T5X does):
    returns the frozen variables (`params`, `params_axes`)."""
    types = dict(input_types or {})
    decoder_shape = input_shapes['decoder_input_tokens']
    decoder_type = types.get('decoder_input_tokens', jnp.float32)
    return flax_core.freeze(self.module.init(
        rng,
        jnp.ones(input_shapes['encoder_input_tokens'],
                 types.get('encoder_input_tokens', jnp.float32)),
        jnp.ones(decoder_shape, decoder_type),
        jnp.ones(decoder_shape, decoder_type),
        encoder_segment_ids=_ones(input_shapes, types, 'encoder_segment_ids',
                                  jnp.int32),
        decoder_segment_ids=_ones(input_shapes, types, 'decoder_segment_ids',
                                  jnp.int32),
        encoder_positions=_ones(input_shapes, types, 'encoder_positions',
                                jnp.int32),
        decoder_positions=_ones(input_shapes, types, 'decoder_positions',
                                jnp.int32),
        enable_dropout=False, decode=False))

  def _compute_logits(self, params, batch, dropout_rng=None, mutable=False,
                      other_variables=None):
    rngs = None if dropout_rng is None else {'dropout': dropout_rng}
    return self.module.apply(
        {'params': params, **(other_variables or {})},
        batch['encoder_input_tokens'],
        batch['decoder_input_tokens'],
        batch['decoder_target_tokens'],
        encoder_segment_ids=batch.get('encoder_segment_ids'),
        decoder_segment_ids=batch.get('decoder_segment_ids'),
        encoder_positions=batch.get('encoder_positions'),
        decoder_positions=batch.get('decoder_positions'),
        enable_dropout=rngs is not None, decode=False, rngs=rngs,
        mutable=mutable)

  def _compute_logits_from_slice(self, decoding_state, params, encoded_inputs,
                                 raw_inputs, max_decode_length):
    """One decoder step for `[rows, 1]` tokens against the cache."""
    logits, new_vars = self.module.apply(
        {'params': params, 'cache': decoding_state.cache},
        encoded_inputs, raw_inputs,
        decoding_state.cur_token, decoding_state.cur_token,
        enable_dropout=False, decode=True,
        max_decode_length=max_decode_length, mutable=['cache'],
        method=self.module.decode)
    return jnp.squeeze(logits, axis=1), new_vars['cache']

  def _compute_kv_cache(self, params, encoded, encoder_input_tokens,
                        decoder_input_tokens):
    """The decoder cache for `decoder_input_tokens`' length, its
    cross-attention keys/values already projected from `encoded`.

    A decode-mode call of `decode` creates the cache; its logits are dead code
    that XLA drops under jit. The steps then only read the cross-attention
    cache (`decoding.mark_static_kv_filled`).
    """
    _, variables = self.module.apply(
        {'params': params}, encoded, encoder_input_tokens,
        jnp.ones_like(decoder_input_tokens),
        jnp.ones_like(decoder_input_tokens),
        enable_dropout=False, decode=True, mutable=['cache'],
        method=self.module.decode)
    return decoding.mark_static_kv_filled(variables['cache'])

  def predict_batch_with_aux(self, params: PyTree, batch: Batch,
                             rng: jax.Array | None = None,
                             decoder_params: MutableMapping[str, Any] | None
                             = None,
                             return_all_decodes: bool | None = None,
                             num_decodes: int | None = None,
                             prompt_with_targets: bool = False):
    """Decodes `[batch, target_length]` outputs with `decode_fn`.

    Encodes once and runs the decoder one token at a time over its cache; the
    cross-attention keys/values are projected once per example, before the
    first step, and shared by the example's decodes (beams or samples). With
    `prompt_with_targets`, `decoder_input_tokens` (EOS removed) are forced as a
    prompt. Returns `(decodes, {'scores': ...})`: the best decode per row, or
    all of them (`[batch, num_decodes, length]`, increasing score) when
    `return_all_decodes`.
    """
    if return_all_decodes is None:
      return_all_decodes = self._default_decoder_params['return_all_decodes']
    if num_decodes is None:
      num_decodes = self._default_decoder_params['num_decodes']
    encoder_input_tokens = batch['encoder_input_tokens']
    decoder_input_tokens = batch['decoder_input_tokens']
    if prompt_with_targets:
      eos = getattr(self.output_vocabulary, 'eos_id', None)
      prompt = decoder_input_tokens * (decoder_input_tokens != eos)
    else:
      prompt = jnp.zeros_like(decoder_input_tokens)
    encoded = self.module.apply({'params': params}, encoder_input_tokens,
                                enable_dropout=False,
                                method=self.module.encode)
    cache = self._compute_kv_cache(params, encoded, encoder_input_tokens,
                                   decoder_input_tokens)
    # The cross-attention keys/values are in the cache once per example:
    # nothing is copied per decode.
    tokens_to_logits = functools.partial(
        self._compute_logits_from_slice, params=params, encoded_inputs=encoded,
        raw_inputs=encoder_input_tokens,
        max_decode_length=decoder_input_tokens.shape[1])
    decodes, scores = self._decode_fn(
        inputs=prompt, cache=cache, tokens_to_logits=tokens_to_logits,
        num_decodes=num_decodes, **self._decode_params(decoder_params, rng))
    if return_all_decodes:
      return decodes, {'scores': scores}
    return decodes[:, -1, :], {'scores': scores[:, -1]}


@gin.configurable
class DecoderOnlyModel(BaseTransformerModel):
  """A decoder-only language model as a T5X model.

  With `inputs` and `targets` (seqio.DecoderFeatureConverter), the loss covers
  the targets only (via `decoder_loss_weights`) and prediction continues the
  inputs. `inputs_bidirectional_attention` makes the inputs region a prefix-LM
  (needs `decoder_causal_attention` in the batch).
  """

  FEATURE_CONVERTER_CLS = seqio.DecoderFeatureConverter

  def __init__(self, module, vocabulary,
               decode_fn: Callable = decoding.temperature_sample,
               inputs_bidirectional_attention: bool = False,
               label_smoothing: float = 0.0, z_loss: float = 0.0,
               loss_normalizing_factor=None, feature_converter_cls=None):
    super().__init__(module, vocabulary, vocabulary, decode_fn,
                     label_smoothing, z_loss, loss_normalizing_factor,
                     feature_converter_cls)
    self._inputs_bidirectional_attention = inputs_bidirectional_attention

  def get_initial_variables(self, rng, input_shapes, input_types=None):
    types = dict(input_types or {})
    shape = input_shapes['decoder_input_tokens']
    dtype = types.get('decoder_input_tokens', jnp.float32)
    return flax_core.freeze(self.module.init(
        rng, jnp.ones(shape, dtype), jnp.ones(shape, dtype),
        enable_dropout=False))

  def _decoder_causal_attention(self, batch):
    if not self._inputs_bidirectional_attention:
      return None
    if 'decoder_causal_attention' not in batch:
      raise ValueError(
          'inputs_bidirectional_attention needs the "decoder_causal_attention" '
          'feature: use seqio.DecoderFeatureConverter with both "inputs" and '
          '"targets" in task_feature_lengths.')
    return batch['decoder_causal_attention']

  def _compute_logits(self, params, batch, dropout_rng=None, mutable=False,
                      other_variables=None):
    rngs = None if dropout_rng is None else {'dropout': dropout_rng}
    return self.module.apply(
        {'params': params, **(other_variables or {})},
        batch['decoder_input_tokens'],
        batch['decoder_target_tokens'],
        decoder_segment_ids=batch.get('decoder_segment_ids'),
        decoder_positions=batch.get('decoder_positions'),
        decoder_causal_attention=self._decoder_causal_attention(batch),
        enable_dropout=rngs is not None, decode=False, rngs=rngs,
        mutable=mutable)

  def _compute_logits_from_slice(self, decoding_state, params,
                                 max_decode_length):
    logits, new_vars = self.module.apply(
        {'params': params, 'cache': decoding_state.cache},
        decoding_state.cur_token, decoding_state.cur_token,
        enable_dropout=False, decode=True,
        max_decode_length=max_decode_length, mutable=['cache'])
    return jnp.squeeze(logits, axis=1), new_vars['cache']

  @staticmethod
  def prompt_batch(prompts: jnp.ndarray, num_generate: int) -> dict:
    """The features `predict_batch` needs to continue `prompts` by up to
    `num_generate` tokens.

    prompts: `[batch, P]` int tokens, each row left-aligned and padded with 0.
    Returns what seqio's prefix-LM feature converter makes for `inputs` =
    prompts and `num_generate` targets (without the targets, which are
    unknown): `decoder_input_tokens [batch, P + num_generate]` = BOS, the
    prompt, zeros, and `decoder_causal_attention` marking BOS and the prompt.
    """
    if num_generate < 1:
      raise ValueError(f'num_generate must be at least 1, got {num_generate}.')
    prompts = jnp.asarray(prompts).astype(jnp.int32)
    rows, prompt_length = prompts.shape
    tokens = jnp.concatenate(
        [jnp.zeros((rows, 1), jnp.int32), prompts,
         jnp.zeros((rows, num_generate - 1), jnp.int32)], axis=1)
    lengths = jnp.sum(prompts != 0, axis=1)
    causal = jnp.arange(prompt_length + num_generate)[None] <= lengths[:, None]
    return {'decoder_input_tokens': tokens,
            'decoder_causal_attention': causal.astype(jnp.int32)}

  def predict_batch_with_aux(self, params: PyTree, batch: Batch,
                             rng: jax.Array | None = None, *,
                             return_all_decodes: bool = False,
                             num_decodes: int = 1,
                             decoder_params: MutableMapping[str, Any] | None
                             = None):
    """Continues each row's inputs; returns only the generated part.

    The inputs (where `decoder_causal_attention` is 1) are fed through the cache
    one token at a time (teacher forcing inside `decode_fn`), which works for
    every attention scheme's cache; then tokens are generated up to the
    feature length. Returns `(sequences, {'scores': ...})` with the prompt
    removed and the rest shifted left, as T5X does.
    """
    if 'decoder_causal_attention' not in batch:
      raise ValueError(
          'Batch has no "decoder_causal_attention": a decoder-only model '
          'continues prompts, so predicting needs TASK_FEATURE_LENGTHS with '
          "both 'inputs' (the prompt length) and 'targets' (tokens to "
          'generate).')
    if self._inputs_bidirectional_attention:
      raise NotImplementedError(
          'Prediction with inputs_bidirectional_attention needs a prefilled '
          'cache, which fovea_jax networks do not build; train and score with '
          'it, or predict with a causal prefix.')
    inputs = batch['decoder_input_tokens'] * batch['decoder_causal_attention']
    _, variables = self.module.apply(
        {'params': params}, jnp.ones_like(inputs), jnp.ones_like(inputs),
        enable_dropout=False, decode=True, mutable=['cache'])
    max_decode_length = inputs.shape[1]
    tokens_to_logits = functools.partial(
        self._compute_logits_from_slice, params=params,
        max_decode_length=max_decode_length)
    sequences, scores = self._decode_fn(
        inputs=inputs, cache=variables['cache'],
        tokens_to_logits=tokens_to_logits, num_decodes=num_decodes,
        **self._decode_params(decoder_params, rng))
    prompt_lengths = jnp.sum(inputs != 0, axis=1)
    if not return_all_decodes:
      return (decoding.remove_prefix(sequences[:, -1], prompt_lengths),
              {'scores': scores[:, -1]})
    flat = sequences.reshape(-1, sequences.shape[-1])
    flat = decoding.remove_prefix(flat,
                                  jnp.repeat(prompt_lengths, num_decodes))
    return flat.reshape(sequences.shape), {'scores': scores}

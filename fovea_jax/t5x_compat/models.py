"""T5X's DecoderOnlyModel for networks that take the prompt through the cache.

T5X's own `DecoderOnlyModel.predict_batch_with_aux` first prefills the cache
with the whole prompt (`module(..., prefill=True)`) and hands its decode
function the per-row index where each prompt ends (`initial_index`), expecting
a per-row `cache_index` too. fovea_jax's DecoderOnly does not prefill (the
fovea/FMA caches are built token by token) and keeps one shared scalar
`cache_index`, so this subclass hands T5X's decode function an empty cache and
no `initial_index`: T5X's `temperature_sample` and `beam_search` then start at
BOS for every row and force the prompt tokens one by one (their documented
behaviour for `initial_index=None`, which also expands the cache for several
decodes correctly), and the prompt is cut from the output afterwards, as T5X
does after prefilling.
"""
import functools

import jax.numpy as jnp
from t5x import models as t5x_models


def decode_from_bos(decode_fn):
  """`decode_fn` called as T5X's DecoderOnlyModel calls it, minus the
  `initial_index` of a prefilled cache (ours start empty: every row at 0)."""

  @functools.wraps(decode_fn)
  def decode(*, initial_index=None, **kwargs):
    del initial_index  # All zeros (see DecoderOnlyModel._compute_kv_cache).
    return decode_fn(**kwargs)

  return decode


class DecoderOnlyModel(t5x_models.DecoderOnlyModel):
  """`t5x.models.DecoderOnlyModel` without prompt prefilling."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._decode_fn = decode_from_bos(self._decode_fn)

  def _compute_kv_cache(self, params, inputs, causal_attention_mask):
    del causal_attention_mask  # the prompt is forced by the decode function
    _, variables = self.module.apply(
        {'params': params}, jnp.ones_like(inputs), jnp.ones_like(inputs),
        enable_dropout=False, decode=True, mutable=['cache'])
    return variables['cache'], jnp.zeros((inputs.shape[0],), jnp.int32)

  def predict_batch_with_aux(self, params, batch, rng=None, **kwargs):
    decodes, aux = super().predict_batch_with_aux(params, batch, rng, **kwargs)
    prompt = batch['decoder_input_tokens'] * batch['decoder_causal_attention']
    lengths = jnp.sum(prompt != 0, axis=1)
    if decodes.ndim == 3:  # return_all_decodes: [batch, num_decodes, length]
      flat = t5x_models.remove_prefix(
          decodes.reshape(-1, decodes.shape[-1]),
          jnp.repeat(lengths, decodes.shape[1]))
      return flat.reshape(decodes.shape), aux
    return t5x_models.remove_prefix(decodes, lengths), aux

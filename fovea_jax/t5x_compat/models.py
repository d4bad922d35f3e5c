"""T5X's DecoderOnlyModel for networks that take the prompt through the cache.

T5X's own `DecoderOnlyModel.predict_batch_with_aux` first prefills the cache
with the whole prompt (`module(..., prefill=True)`). fovea_jax's DecoderOnly
does not prefill (the fovea/FMA caches are built token by token), so this
subclass hands T5X's decode function an empty cache starting at BOS; T5X's
`temperature_sample` then forces the prompt tokens one by one, and the prompt is
cut from the output afterwards, as T5X does after prefilling.
"""
import jax.numpy as jnp
from t5x import models as t5x_models


class DecoderOnlyModel(t5x_models.DecoderOnlyModel):
  """`t5x.models.DecoderOnlyModel` without prompt prefilling."""

  def _compute_kv_cache(self, params, inputs, causal_attention_mask):
    del causal_attention_mask  # the prompt is forced by the decode function
    _, variables = self.module.apply(
        {'params': params}, jnp.ones_like(inputs), jnp.ones_like(inputs),
        enable_dropout=False, decode=True, mutable=['cache'])
    return variables['cache'], jnp.zeros((inputs.shape[0],), jnp.int32)

  def predict_batch_with_aux(self, params, batch, rng=None, **kwargs):
    decodes, aux = super().predict_batch_with_aux(params, batch, rng, **kwargs)
    prompt = batch['decoder_input_tokens'] * batch['decoder_causal_attention']
    return t5x_models.remove_prefix(decodes, jnp.sum(prompt != 0, axis=1)), aux

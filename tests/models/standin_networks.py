"""Tiny dense networks with the T5X module interface, for testing the model
wrappers, decoding and the partitioner independently of fovea_jax.networks.

One layer each, dense attention, a KV cache shaped like T5X's (batch-major
`cached_key`/`cached_value`, scalar `cache_index`), every param named with
logical axes. Not a model anyone should train.
"""
import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen import partitioning as nn_partitioning

from fovea_jax.sharding import axis_names as ax

_init = nn.initializers.normal(0.5)


def _param(module, name, shape, axes):
  return nn_partitioning.param_with_axes(name, _init, shape, axes=axes)


class Attention(nn.Module):
  heads: int
  head_dim: int

  @nn.compact
  def __call__(self, x, kv, mask, decode=False):
    emb = x.shape[-1]
    q = jnp.einsum('ble,ehd->blhd', x,
                   _param(self, 'query', (emb, self.heads, self.head_dim),
                          (ax.EMBED, ax.HEADS, ax.KV)))
    k = jnp.einsum('ble,ehd->blhd', kv,
                   _param(self, 'key', (emb, self.heads, self.head_dim),
                          (ax.EMBED, ax.HEADS, ax.KV)))
    v = jnp.einsum('ble,ehd->blhd', kv,
                   _param(self, 'value', (emb, self.heads, self.head_dim),
                          (ax.EMBED, ax.HEADS, ax.KV)))
    if decode:
      initialized = self.has_variable('cache', 'cached_key')
      cached_k = self.variable('cache', 'cached_key', jnp.zeros, k.shape,
                               k.dtype)
      cached_v = self.variable('cache', 'cached_value', jnp.zeros, v.shape,
                               v.dtype)
      index = self.variable('cache', 'cache_index',
                            lambda: jnp.zeros((), jnp.int32))
      if initialized:
        i = index.value
        cached_k.value = jax.lax.dynamic_update_slice_in_dim(
            cached_k.value, k, i, axis=1)
        cached_v.value = jax.lax.dynamic_update_slice_in_dim(
            cached_v.value, v, i, axis=1)
        index.value = i + 1
        k, v = cached_k.value, cached_v.value
        mask = (jnp.arange(k.shape[1]) <= i)[None, None, :]
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k)
    logits = jnp.where(mask[:, None], logits, -1e9)
    out = jnp.einsum('bhqk,bkhd->bqhd', jax.nn.softmax(logits), v)
    return jnp.einsum('blhd,hde->ble', out,
                      _param(self, 'out', (self.heads, self.head_dim, emb),
                             (ax.HEADS, ax.KV, ax.EMBED)))


class Mlp(nn.Module):

  @nn.compact
  def __call__(self, x):
    emb = x.shape[-1]
    h = jax.nn.gelu(x @ _param(self, 'wi', (emb, 4 * emb), (ax.EMBED, ax.MLP)))
    return h @ _param(self, 'wo', (4 * emb, emb), (ax.MLP, ax.EMBED))


class Block(nn.Module):
  heads: int
  head_dim: int
  cross: bool = False

  @nn.compact
  def __call__(self, x, self_mask, encoded=None, cross_mask=None,
               decode=False):
    x = x + Attention(self.heads, self.head_dim, name='self_attention')(
        x, x, self_mask, decode=decode)
    if self.cross:
      x = x + Attention(self.heads, self.head_dim, name='cross_attention')(
          x, encoded, cross_mask)
    x = x + Mlp(name='mlp')(x)
    return nn_partitioning.with_sharding_constraint(
        x, (ax.BATCH, ax.LENGTH, ax.EMBED))


def _causal(tokens):
  length = tokens.shape[1]
  return jnp.tril(jnp.ones((1, length, length), bool))


class StandInEncoderDecoder(nn.Module):
  vocab_size: int = 16
  emb_dim: int = 8
  heads: int = 2
  head_dim: int = 4

  def setup(self):
    self.embed = nn_partitioning.param_with_axes(
        'token_embedder', _init, (self.vocab_size, self.emb_dim),
        axes=(ax.VOCAB, ax.EMBED))
    self.encoder = Block(self.heads, self.head_dim, name='encoder')
    self.decoder = Block(self.heads, self.head_dim, cross=True, name='decoder')
    self.logits = nn_partitioning.param_with_axes(
        'logits_dense', _init, (self.emb_dim, self.vocab_size),
        axes=(ax.EMBED, ax.VOCAB))

  def encode(self, encoder_input_tokens, encoder_segment_ids=None,
             enable_dropout=True):
    tokens = encoder_input_tokens.astype(jnp.int32)
    valid = tokens > 0
    return self.encoder(self.embed[tokens], valid[:, None, :])

  def decode(self, encoded, encoder_input_tokens, decoder_input_tokens,
             decoder_target_tokens, encoder_segment_ids=None,
             decoder_segment_ids=None, decoder_positions=None,
             enable_dropout=True, decode=False, max_decode_length=None):
    tokens = decoder_input_tokens.astype(jnp.int32)
    cross_mask = (encoder_input_tokens > 0)[:, None, :]
    x = self.decoder(self.embed[tokens], _causal(tokens), encoded, cross_mask,
                     decode=decode)
    return x @ self.logits

  def __call__(self, encoder_input_tokens, decoder_input_tokens,
               decoder_target_tokens, encoder_segment_ids=None,
               decoder_segment_ids=None, encoder_positions=None,
               decoder_positions=None, *, enable_dropout=True, decode=False):
    encoded = self.encode(encoder_input_tokens)
    return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                       decoder_target_tokens, decode=decode)


class StandInDecoderOnly(nn.Module):
  vocab_size: int = 16
  emb_dim: int = 8
  heads: int = 2
  head_dim: int = 4

  @nn.compact
  def __call__(self, decoder_input_tokens, decoder_target_tokens,
               decoder_segment_ids=None, decoder_positions=None,
               decoder_causal_attention=None, *, enable_dropout=True,
               decode=False, max_decode_length=None, prefill=None,
               prefill_lengths=None):
    tokens = decoder_input_tokens.astype(jnp.int32)
    embed = nn_partitioning.param_with_axes(
        'token_embedder', _init, (self.vocab_size, self.emb_dim),
        axes=(ax.VOCAB, ax.EMBED))
    x = Block(self.heads, self.head_dim, name='decoder')(
        embed[tokens], _causal(tokens), decode=decode)
    return x @ embed.T

"""A tiny stand-in model with T5X's model-wrapper interface, for trainer tests.

Next-token prediction with an embedding, one gated MLP and untied logits; every
parameter carries logical axes through `param_with_axes`, so sharding, checkpoint
and restore tests exercise the same machinery the real networks use.
"""
import flax.linen as nn
from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fovea_jax.sharding import axis_names as ax
from fovea_jax.sharding import partitioner as partitioner_lib

VOCAB = 16
LOSS_NORMALIZING_FACTOR = 64.0


class TinyNet(nn.Module):
  vocab: int = VOCAB
  emb: int = 8
  mlp: int = 16
  init_scale: float = 0.5  # 0: a dead network, every gradient exactly 0.

  @nn.compact
  def __call__(self, tokens):
    init = (nn.initializers.normal(self.init_scale) if self.init_scale else
            nn.initializers.zeros)
    embedding = nn_partitioning.param_with_axes(
        'embedding', init, (self.vocab, self.emb), jnp.float32,
        axes=(ax.VOCAB, ax.EMBED))
    wi = nn_partitioning.param_with_axes('wi', init, (self.emb, self.mlp),
                                         jnp.float32, axes=(ax.EMBED, ax.MLP))
    wo = nn_partitioning.param_with_axes('wo', init, (self.mlp, self.emb),
                                         jnp.float32, axes=(ax.MLP, ax.EMBED))
    logits_w = nn_partitioning.param_with_axes(
        'logits', init, (self.emb, self.vocab), jnp.float32,
        axes=(ax.EMBED, ax.VOCAB))
    x = embedding[tokens.astype(jnp.int32)]
    x = nn_partitioning.with_sharding_constraint(x, (ax.BATCH, ax.LENGTH, ax.EMBED))
    x = x + jax.nn.gelu(x @ wi.astype(x.dtype)) @ wo.astype(x.dtype)
    return x @ logits_w.astype(x.dtype)


class TinyModel:
  """loss_fn / get_initial_variables / predict_batch like T5X's models."""

  def __init__(self, **net_options):
    self.module = TinyNet(**net_options)

  def get_initial_variables(self, rng, input_shapes=None, input_types=None):
    shape = (input_shapes or {}).get('decoder_input_tokens', (1, 4))
    return self.module.init(rng, jnp.ones(shape, jnp.int32))

  def loss_fn(self, params, batch, dropout_rng):
    del dropout_rng
    logits = self.module.apply({'params': params}, batch['decoder_input_tokens'])
    weights = batch['decoder_loss_weights'].astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), batch['decoder_target_tokens'])
    correct = (logits.argmax(-1) == batch['decoder_target_tokens']) * weights
    # Normalised by a constant, as T5X's loss_normalizing_factor does, so that
    # microbatch losses add up to the full batch's.
    return (losses * weights).sum() / LOSS_NORMALIZING_FACTOR, {
        'accuracy': correct.sum() / jnp.maximum(weights.sum(), 1.0)}

  def predict_batch(self, params, batch, rng=None):
    logits = self.module.apply({'params': params}, batch['decoder_input_tokens'])
    return logits.argmax(-1)


def synthetic_batch(step, batch_size=8, length=8, seed=0):
  """Deterministic batch number `step`: count upwards modulo VOCAB."""
  rng = np.random.default_rng([seed, step])
  start = rng.integers(1, VOCAB, size=(batch_size, 1))
  tokens = (start + np.arange(length + 1)) % (VOCAB - 1) + 1
  return {
      'decoder_input_tokens': tokens[:, :-1].astype(np.int32),
      'decoder_target_tokens': tokens[:, 1:].astype(np.int32),
      'decoder_loss_weights': np.ones((batch_size, length), np.float32),
  }


def make_partitioner(shape=(4, 2)):
  return partitioner_lib.Partitioner(
      mesh_shape=shape, devices=jax.devices()[:int(np.prod(shape))])

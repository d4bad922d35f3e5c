"""Token-level losses of the model wrappers: cross-entropy with label smoothing
and z-loss, and T5X's loss-normalizing factors.

Semantics follow t5x/losses.py so that numbers line up with T5X runs: the loss
is a *sum* over weighted tokens divided by `loss_normalizing_factor` (None: not
divided; a number; or one of the special strings below).
"""
import enum
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np


@jax.custom_vjp
def cross_entropy_with_logits(logits, targets, z_loss):
  """Per-token cross-entropy against soft `targets`, plus `z_loss * log(Z)^2`.

  Returns `(loss, z_loss_part)`, both `[batch, length]`. The custom gradient is
  the textbook softmax-minus-targets one, which stays finite in bfloat16, and
  ignores the z-loss output (it is only reported).
  """
  log_z = jax.nn.logsumexp(logits, axis=-1)
  loss = -jnp.sum(targets * (logits - log_z[..., None]), axis=-1)
  z_part = z_loss * jnp.square(log_z)
  return loss + z_part, z_part


def _cross_entropy_fwd(logits, targets, z_loss):
  max_logit = jnp.max(logits, axis=-1, keepdims=True)
  exp_shifted = jnp.exp(logits - max_logit)
  sum_exp = jnp.sum(exp_shifted, axis=-1, keepdims=True)
  log_softmax = logits - max_logit - jnp.log(sum_exp)
  log_z = jnp.squeeze(jnp.log(sum_exp) + max_logit, axis=-1)
  z_part = z_loss * jnp.square(log_z)
  loss = -jnp.sum(targets * log_softmax, axis=-1) + z_part
  return (loss, z_part), (logits, targets, z_loss, exp_shifted / sum_exp,
                          log_softmax, log_z)


def _cross_entropy_bwd(residuals, grads):
  logits, targets, z_loss, softmax, log_softmax, log_z = residuals
  g = grads[0][..., None]  # the z-loss output is for logging only
  # d/dlogits of [-sum(t * log_softmax) + z * log_z^2], with sum(t) == 1.
  g_logits = g * ((1 + 2 * z_loss * log_z)[..., None] * softmax - targets)
  g_targets = -g * log_softmax
  return (g_logits.astype(logits.dtype), g_targets.astype(targets.dtype),
          jnp.zeros_like(z_loss))


cross_entropy_with_logits.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def compute_weighted_cross_entropy(logits, targets, weights=None,
                                   label_smoothing: float = 0.0,
                                   z_loss: float = 0.0,
                                   loss_normalizing_factor=None):
  """Weighted, label-smoothed cross-entropy summed over tokens.

  Args:
    logits: `[batch, length, vocab]`.
    targets: `[batch, length]` int token ids.
    weights: `[batch, length]` or None (all ones).
    label_smoothing: mass spread evenly over the other `vocab - 1` tokens; the
      smoothed targets' own entropy is subtracted so a perfect model scores 0.
    z_loss: coefficient of `log(Z)^2`.
    loss_normalizing_factor: a number to divide the sums by, or None.

  Returns:
    `(loss, z_loss, weight_sum)` scalars (loss includes the z-loss part).
  """
  if logits.ndim != targets.ndim + 1:
    raise ValueError(f'logits {logits.shape} must have one more dim than '
                     f'targets {targets.shape}.')
  vocab_size = logits.shape[-1]
  confidence = 1.0 - label_smoothing
  low = (1.0 - confidence) / max(vocab_size - 1, 1)
  entropy_of_targets = -(confidence * np.log(confidence) +
                         (vocab_size - 1) * low * np.log(low + 1e-20))
  soft_targets = jax.nn.one_hot(targets, vocab_size, dtype=logits.dtype)
  soft_targets = soft_targets * (confidence - low) + low
  token_loss, token_z = cross_entropy_with_logits(
      logits, soft_targets, jnp.asarray(z_loss, jnp.float32))
  token_loss = token_loss - entropy_of_targets
  if weights is None:
    weight_sum = jnp.asarray(np.prod(targets.shape), jnp.float32)
  else:
    token_loss = token_loss * weights
    token_z = token_z * weights
    weight_sum = jnp.sum(weights)
  if loss_normalizing_factor is not None:
    token_loss = token_loss / loss_normalizing_factor
    token_z = token_z / loss_normalizing_factor
  return jnp.sum(token_loss), jnp.sum(token_z), weight_sum


@enum.unique
class SpecialLossNormalizingFactor(enum.Enum):
  """Loss normalizers computed from the batch (T5X's names).

  NUM_REAL_TARGET_TOKENS: sum of the loss weights (mean over real tokens).
  NUM_TOTAL_TARGET_TOKENS: batch * target length, padding included.
  AVERAGE_PER_SEQUENCE: mean over sequences of each one's per-token mean, packed
    sequences counted separately.
  """
  NUM_REAL_TARGET_TOKENS = 1
  NUM_TOTAL_TARGET_TOKENS = 2
  AVERAGE_PER_SEQUENCE = 3


def as_special_loss_normalizing_factor(
    factor) -> SpecialLossNormalizingFactor:
  """The enum for a name like 'num_real_target_tokens' (gin cannot spell enums)."""
  if isinstance(factor, SpecialLossNormalizingFactor):
    return factor
  try:
    return SpecialLossNormalizingFactor[factor.upper()]
  except KeyError:
    raise ValueError(
        f'Unknown loss_normalizing_factor {factor!r}: use a number, None or one '
        f'of {[f.name for f in SpecialLossNormalizingFactor]}.') from None


def _sum_weights_per_segment(positions, segment_ids, weights):
  """For packed rows: each token gets the total weight of its own segment."""
  # Segment ids are positive inside examples and 0 on padding; summing weights
  # per (row, segment) with a one-hot over segment ids needs no scan.
  del positions  # segment ids alone identify the examples of a row
  num_segments = segment_ids.shape[-1] + 1
  one_hot = jax.nn.one_hot(segment_ids, num_segments, dtype=weights.dtype)
  per_segment = jnp.einsum('bls,bl->bs', one_hot, weights)
  return jnp.einsum('bls,bs->bl', one_hot, per_segment)


def get_loss_normalizing_factor_and_weights(loss_normalizing_factor,
                                            batch: Mapping[str, jnp.ndarray]):
  """Resolves the configured factor against a batch.

  Returns `(factor, weights)` where factor is None or a scalar and weights are
  the (possibly rescaled) per-token loss weights, or None.
  """
  weights = batch.get('decoder_loss_weights')
  if loss_normalizing_factor is None or isinstance(loss_normalizing_factor,
                                                   (int, float)):
    return loss_normalizing_factor, weights
  factor = as_special_loss_normalizing_factor(loss_normalizing_factor)
  if weights is None:
    weights = (batch['decoder_target_tokens'] > 0).astype(jnp.float32)
  weights = weights.astype(jnp.float32)
  if factor is SpecialLossNormalizingFactor.NUM_REAL_TARGET_TOKENS:
    return jnp.sum(weights), weights
  if factor is SpecialLossNormalizingFactor.NUM_TOTAL_TARGET_TOKENS:
    return float(np.prod(batch['decoder_target_tokens'].shape)), weights
  if 'decoder_segment_ids' in batch:
    per_token_total = _sum_weights_per_segment(
        batch.get('decoder_positions'), batch['decoder_segment_ids'], weights)
  else:
    per_token_total = jnp.sum(weights, axis=-1, keepdims=True)
  weights = jnp.where(per_token_total > 0,
                      weights / jnp.maximum(per_token_total, 1e-9), 0.0)
  return jnp.sum(weights), weights

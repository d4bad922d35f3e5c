"""Cross-entropy with label smoothing and z-loss, and the loss normalizers,
against direct formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax import losses


def _direct_loss(logits, targets, weights, smoothing, z):
  vocab = logits.shape[-1]
  soft = jax.nn.one_hot(targets, vocab) * (1 - smoothing - smoothing /
                                           (vocab - 1)) + smoothing / (vocab - 1)
  log_z = jax.nn.logsumexp(logits, -1)
  ce = -jnp.sum(soft * jax.nn.log_softmax(logits), -1)
  entropy = -jnp.sum(jnp.where(soft > 0, soft * jnp.log(soft), 0.0), -1)
  return jnp.sum((ce - entropy + z * log_z**2) * weights)


@pytest.mark.slow
@pytest.mark.parametrize('smoothing,z', [(0.0, 0.0), (0.1, 1e-2)])
def test_weighted_cross_entropy_matches_direct_formula_and_its_gradient(
    smoothing, z):
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 5, 7)) * 3, jnp.float32)
  targets = jnp.asarray(rng.integers(0, 7, (2, 5)))
  weights = jnp.asarray(rng.integers(0, 2, (2, 5)), jnp.float32)
  loss, z_part, weight_sum = losses.compute_weighted_cross_entropy(
      logits, targets, weights, label_smoothing=smoothing, z_loss=z)
  np.testing.assert_allclose(loss, _direct_loss(logits, targets, weights,
                                                smoothing, z), rtol=1e-5)
  assert weight_sum == weights.sum()
  assert (z_part > 0) == (z > 0)
  grad = jax.grad(lambda l: losses.compute_weighted_cross_entropy(
      l, targets, weights, label_smoothing=smoothing, z_loss=z)[0])(logits)
  direct = jax.grad(_direct_loss)(logits, targets, weights, smoothing, z)
  np.testing.assert_allclose(grad, direct, atol=1e-5)


def test_special_normalizers():
  targets = jnp.array([[3, 4, 0, 0], [5, 0, 0, 0]])
  batch = {'decoder_target_tokens': targets}
  factor, weights = losses.get_loss_normalizing_factor_and_weights(
      'num_real_target_tokens', batch)
  assert factor == 3
  factor, _ = losses.get_loss_normalizing_factor_and_weights(
      'NUM_TOTAL_TARGET_TOKENS', batch)
  assert factor == 8
  factor, weights = losses.get_loss_normalizing_factor_and_weights(
      'AVERAGE_PER_SEQUENCE', batch)
  np.testing.assert_allclose(weights, [[.5, .5, 0, 0], [1, 0, 0, 0]])
  assert factor == 2
  # Packed: two examples in row 0 weigh equally whatever their lengths.
  packed = {'decoder_target_tokens': jnp.array([[3, 4, 5, 6, 0]]),
            'decoder_segment_ids': jnp.array([[1, 1, 1, 2, 0]]),
            'decoder_positions': jnp.array([[0, 1, 2, 0, 0]])}
  factor, weights = losses.get_loss_normalizing_factor_and_weights(
      'AVERAGE_PER_SEQUENCE', packed)
  np.testing.assert_allclose(weights, [[1 / 3, 1 / 3, 1 / 3, 1, 0]], rtol=1e-6)
  assert factor == pytest.approx(2)
  with pytest.raises(ValueError, match='NUM_REAL_TARGET_TOKENS'):
    losses.get_loss_normalizing_factor_and_weights('per_token', batch)

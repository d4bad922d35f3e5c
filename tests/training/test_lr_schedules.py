"""T5X factor-string schedules against their closed forms."""
import math

import numpy as np
import pytest

from fovea_jax.optim import lr_schedules


def lr(factors, step, **kw):
  return float(lr_schedules.create_learning_rate_scheduler(factors, **kw)(step))


def test_constant_times_rsqrt_decay_is_flat_then_inverse_sqrt():
  kw = dict(base_learning_rate=1.0, warmup_steps=100)
  assert lr('constant * rsqrt_decay', 0, **kw) == pytest.approx(0.1)
  assert lr('constant * rsqrt_decay', 50, **kw) == pytest.approx(0.1)
  assert lr('constant * rsqrt_decay', 400, **kw) == pytest.approx(0.05)


def test_linear_warmup_then_rsqrt_normalized_decay():
  kw = dict(base_learning_rate=2.0, warmup_steps=10)
  f = 'constant * linear_warmup * rsqrt_normalized_decay'
  np.testing.assert_allclose([lr(f, s, **kw) for s in (0, 5, 10, 40)],
                             [1e-8, 1.0, 2.0, 1.0], rtol=1e-6)


def test_cosine_linear_and_step_decay():
  assert lr('constant * cosine_decay', 50, base_learning_rate=1.0,
            steps_per_cycle=100) == pytest.approx(0.5)
  assert lr('linear_decay', 15, warmup_steps=10, steps_per_cycle=10) == (
      pytest.approx(0.5))
  assert lr('decay_every', 25, decay_factor=0.5, steps_per_decay=10) == (
      pytest.approx(0.25))
  assert lr('constant * rsqrt_decay', 90, base_learning_rate=1.0,
            warmup_steps=0, step_offset=9) == pytest.approx(1 / math.sqrt(81))


def test_unknown_factor_fails_with_the_known_list():
  with pytest.raises(ValueError, match='rsqrt_decay'):
    lr_schedules.create_learning_rate_scheduler('constant * inverse_sqrt')

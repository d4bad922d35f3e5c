"""Learning-rate schedules spelled as T5X factor strings.

`create_learning_rate_scheduler(factors='constant * rsqrt_decay', ...)` returns a
function step -> learning rate, the product of the named factors, exactly the
vocabulary T5X run files use. Works on Python ints and traced jnp scalars alike, so
the same function feeds optax inside jit and the metrics writer outside it.
"""
from typing import Callable

import gin
import jax.numpy as jnp


KNOWN_FACTORS = ('constant', 'linear_warmup', 'rsqrt_decay',
                 'rsqrt_normalized_decay', 'decay_every', 'cosine_decay',
                 'linear_decay')


def parse_factors(factors: str) -> tuple[str, ...]:
  """'constant * rsqrt_decay' -> ('constant', 'rsqrt_decay'), validated."""
  names = tuple(name.strip() for name in factors.split('*') if name.strip())
  if not names:
    raise ValueError(f'Empty learning-rate factor string {factors!r}; use e.g. '
                     "'constant * rsqrt_decay'.")
  unknown = [n for n in names if n not in KNOWN_FACTORS]
  if unknown:
    raise ValueError(f'Unknown learning-rate factor(s) {unknown} in {factors!r}; '
                     f'known factors: {", ".join(KNOWN_FACTORS)}.')
  return names


@gin.configurable
def create_learning_rate_scheduler(
    factors: str = 'constant * linear_warmup * rsqrt_decay',
    base_learning_rate: float = 0.5,
    warmup_steps: int = 1000,
    decay_factor: float = 0.5,
    steps_per_decay: int = 20000,
    steps_per_cycle: int = 100000,
    step_offset: int = 0,
    min_learning_rate: float = 1e-8) -> Callable[[jnp.ndarray], jnp.ndarray]:
  """Builds step -> learning rate as the product of T5X's named factors.

  Factors (with `steps = max(0, step - step_offset)`):
    constant: base_learning_rate.
    linear_warmup: min(1, steps / warmup_steps).
    rsqrt_decay: 1 / sqrt(max(steps, warmup_steps)).
    rsqrt_normalized_decay: sqrt(warmup_steps) / sqrt(max(steps, warmup_steps)),
      i.e. rsqrt_decay scaled to 1 at the end of warmup.
    decay_every: decay_factor ** (steps // steps_per_decay).
    cosine_decay: half cosine from 1 to 0 over each steps_per_cycle steps.
    linear_decay: 1 at warmup_steps falling linearly to 0 steps_per_cycle later.
  The result is floored at min_learning_rate.
  """
  names = parse_factors(factors)
  if warmup_steps < 0 or steps_per_decay <= 0 or steps_per_cycle <= 0:
    raise ValueError('warmup_steps must be >= 0 and steps_per_decay, '
                     'steps_per_cycle > 0; got '
                     f'{warmup_steps}, {steps_per_decay}, {steps_per_cycle}.')

  def step_fn(step):
    steps = jnp.maximum(0.0, jnp.asarray(step, jnp.float32) - step_offset)
    # max(1, .) keeps warmup_steps=0 from dividing by zero.
    warmup = float(max(warmup_steps, 1))
    rate = jnp.asarray(1.0, jnp.float32)
    for name in names:
      if name == 'constant':
        rate = rate * base_learning_rate
      elif name == 'linear_warmup':
        rate = rate * jnp.minimum(1.0, steps / warmup)
      elif name == 'rsqrt_decay':
        rate = rate / jnp.sqrt(jnp.maximum(steps, warmup))
      elif name == 'rsqrt_normalized_decay':
        rate = rate * jnp.sqrt(warmup) / jnp.sqrt(jnp.maximum(steps, warmup))
      elif name == 'decay_every':
        rate = rate * decay_factor ** jnp.floor(steps / steps_per_decay)
      elif name == 'cosine_decay':
        progress = jnp.mod(steps / steps_per_cycle, 1.0)
        rate = rate * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
      elif name == 'linear_decay':
        progress = jnp.clip((steps - warmup_steps) / steps_per_cycle, 0.0, 1.0)
        rate = rate * (1.0 - progress)
    return jnp.maximum(rate, min_learning_rate)

  return step_fn

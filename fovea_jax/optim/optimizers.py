"""Optimizers as gin-configurable factories: learning-rate schedule -> optax.

Adafactor with T5X's defaults is the default (factored second moments, update
clipping 1.0, parameter-scale-relative steps); AdamW is available for small
models and fine-tuning. A factory, not an instance, so the Trainer hands in the
schedule it also logs.
"""
from typing import Callable, Optional

import gin
import optax


Schedule = Callable[..., object]


@gin.configurable
def adafactor(learning_rate_fn: Schedule,
              decay_rate: float = 0.8,
              clipping_threshold: Optional[float] = 1.0,
              multiply_by_parameter_scale: bool = True,
              min_dim_size_to_factor: int = 128,
              momentum: Optional[float] = None,
              weight_decay_rate: Optional[float] = None,
              factored: bool = True,
              eps: float = 1e-30) -> optax.GradientTransformation:
  """optax Adafactor with T5X's default hyper-parameters."""
  return optax.adafactor(
      learning_rate=learning_rate_fn,
      decay_rate=decay_rate,
      clipping_threshold=clipping_threshold,
      multiply_by_parameter_scale=multiply_by_parameter_scale,
      min_dim_size_to_factor=min_dim_size_to_factor,
      momentum=momentum,
      weight_decay_rate=weight_decay_rate,
      factored=factored,
      eps=eps)


@gin.configurable
def adamw(learning_rate_fn: Schedule,
          b1: float = 0.9,
          b2: float = 0.999,
          eps: float = 1e-8,
          weight_decay: float = 1e-4,
          max_grad_norm: Optional[float] = 1.0) -> optax.GradientTransformation:
  """AdamW, optionally after global-norm gradient clipping."""
  steps = [optax.adamw(learning_rate_fn, b1=b1, b2=b2, eps=eps,
                       weight_decay=weight_decay)]
  if max_grad_norm is not None:
    steps.insert(0, optax.clip_by_global_norm(max_grad_norm))
  return optax.chain(*steps)

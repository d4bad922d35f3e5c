"""The Trainer: one jitted, sharded train step over a T5X-style model.

The model supplies `loss_fn(params, batch, dropout_rng) -> (loss, metrics)` (z-loss
and label smoothing live there, as in T5X); the Trainer adds the optimizer,
gradient accumulation over microbatches, optional mixed precision (float32 master
weights, forward and backward in `compute_dtype`) and the scalar metrics every run
logs: loss, accuracy (when the model reports it), learning rate, gradient norm and
the number of target tokens. Dropout keys are `fold_in(rng, step)`, so a resumed
run draws exactly the keys an uninterrupted one would.
"""
from typing import Any, Callable, Mapping, NamedTuple, Optional

import flax
import gin
import jax
import jax.numpy as jnp
import optax

from fovea_jax.optim import optimizers
from fovea_jax.sharding import partitioner as partitioner_lib

PyTree = Any


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: PyTree
  opt_state: PyTree


class StateLayout(NamedTuple):
  """Where a TrainState lives, before anything is allocated.

  abstract: the TrainState as ShapeDtypeStructs carrying their shardings (what
    a checkpoint restores onto); specs: the same tree of mesh PartitionSpecs,
    both from the Partitioner.
  """
  abstract: TrainState
  specs: TrainState


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, jnp.ndarray]:
  """Model metrics as plain scalars (clu Metric objects are computed)."""
  out = {}
  for name, value in (metrics or {}).items():
    if hasattr(value, 'compute'):
      value = value.compute()
    out[name] = jnp.asarray(value, jnp.float32)
  return out


def is_ratio_metric(name: str) -> bool:
  """Metrics that are per-token ratios average over microbatches; others add."""
  return name == 'accuracy' or '_per_' in name


def count_target_tokens(batch: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
  """Tokens that carry loss: loss weights when given, else non-padding targets."""
  if 'decoder_loss_weights' in batch:
    return jnp.sum(batch['decoder_loss_weights'] > 0)
  return jnp.sum(batch['decoder_target_tokens'] > 0)


def _cast_floats(tree: PyTree, dtype) -> PyTree:
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
      tree)


@gin.configurable
class Trainer:
  """Owns the optimizer and the compiled train step for one model; every
  sharding decision (params, optimizer state, batches, the step's mesh) is the
  Partitioner's."""

  def __init__(self,
               model: Any,
               partitioner: partitioner_lib.Partitioner,
               learning_rate_fn: Callable[[Any], Any] = gin.REQUIRED,
               optimizer: Callable[..., optax.GradientTransformation] = (
                   optimizers.adafactor),
               num_microbatches: Optional[int] = None,
               compute_dtype: Optional[str] = None):
    if num_microbatches is not None and num_microbatches < 1:
      raise ValueError(f'num_microbatches must be >= 1 or None, got '
                       f'{num_microbatches}.')
    self.model = model
    self.partitioner = partitioner
    self.learning_rate_fn = learning_rate_fn
    self.optimizer = optimizer(learning_rate_fn)
    # Recorded in checkpoints, so a resume with another optimizer says so.
    self.optimizer_name = getattr(optimizer, '__name__', None) or getattr(
        getattr(optimizer, 'func', None), '__name__', type(optimizer).__name__)
    self.num_microbatches = num_microbatches or 1
    self.compute_dtype = jnp.dtype(compute_dtype) if compute_dtype else None
    self._compiled_step = None

  # State ------------------------------------------------------------------

  def _fresh_state(self, params: PyTree) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.optimizer.init(params))

  def state_layout(self, init_variables_fn: Callable[[jax.Array], PyTree]
                   ) -> StateLayout:
    """The train state's shapes and shardings (the train-state initializer's
    half that allocates nothing): params from their logical axes, optimizer
    state from the params, through the Partitioner's one policy."""
    p = self.partitioner
    params, params_specs = p.params_layout(init_variables_fn,
                                           jax.random.PRNGKey(0))
    shapes = jax.eval_shape(self._fresh_state, params)
    specs = TrainState(
        step=p.replicated_specs(shapes.step), params=params_specs,
        opt_state=p.optimizer_state_specs(shapes.opt_state, params_specs,
                                          shapes.params))
    return StateLayout(
        abstract=p.with_shardings(shapes, specs, what='train state'),
        specs=specs)

  def init_state(self, init_variables_fn: Callable[[jax.Array], PyTree],
                 rng: jax.Array) -> TrainState:
    """A fresh state, created directly in its shards (never whole on one device)."""
    layout = self.state_layout(init_variables_fn)
    make = lambda rng: self._fresh_state(partitioner_lib.unbox(
        init_variables_fn(rng)['params']))
    return self.partitioner.partition(
        make, out_shardings=self.partitioner.shardings(layout.specs))(rng)

  def state_from_params(self, params: PyTree, layout: StateLayout
                        ) -> TrainState:
    """A fresh optimizer around given (e.g. warm-start) params at step 0."""
    return self.partitioner.partition(
        self._fresh_state,
        out_shardings=self.partitioner.shardings(layout.specs))(params)

  # Step -------------------------------------------------------------------

  def _loss_and_grads(self, params, batch, rng):
    def loss_of(params, batch, rng):
      if self.compute_dtype is not None:
        # Gradients flow back through the cast, so they arrive in float32.
        params = _cast_floats(params, self.compute_dtype)
      loss, metrics = self.model.loss_fn(params, batch, rng)
      return loss.astype(jnp.float32), scalar_metrics(metrics)

    grad_fn = jax.value_and_grad(loss_of, has_aux=True)
    n = self.num_microbatches
    if n == 1:
      (loss, metrics), grads = grad_fn(params, batch, rng)
      return loss, metrics, grads

    batch_size = next(iter(batch.values())).shape[0]
    if batch_size % n:
      raise ValueError(f'Batch size {batch_size} is not divisible by '
                       f'num_microbatches={n}.')
    micro = jax.tree.map(lambda x: x.reshape((n, batch_size // n) + x.shape[1:]),
                         batch)

    def accumulate(carry, inputs):
      index, microbatch = inputs
      (loss, metrics), grads = grad_fn(params, microbatch,
                                       jax.random.fold_in(rng, index))
      return jax.tree.map(jnp.add, carry, (loss, metrics, grads)), None

    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(
        jnp.zeros_like,
        jax.eval_shape(lambda: (lambda r: (r[0][0], r[0][1], r[1]))(
            grad_fn(params, first, rng))))
    (loss, metrics, grads), _ = jax.lax.scan(accumulate, zeros,
                                             (jnp.arange(n), micro))
    # As in T5X, losses and gradients add up over microbatches (the model's loss
    # is a sum, or normalised by a constant); ratios are averaged instead.
    metrics = {k: v / n if is_ratio_metric(k) else v for k, v in metrics.items()}
    return loss, metrics, grads

  def _train_step(self, state, batch, rng):
    step_rng = jax.random.fold_in(rng, state.step)
    loss, metrics, grads = self._loss_and_grads(state.params, batch, step_rng)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics)
    metrics.update(loss=loss,
                   learning_rate=jnp.asarray(self.learning_rate_fn(state.step),
                                             jnp.float32),
                   grad_norm=optax.tree.norm(grads),
                   num_tokens=count_target_tokens(batch).astype(jnp.float32))
    new_state = TrainState(step=state.step + 1, params=params,
                           opt_state=opt_state)
    return new_state, metrics

  def train_step(self, state: TrainState, batch: Mapping[str, Any],
                 rng: jax.Array):
    """One optimizer step on a batch placed by `partitioner.global_batch`.
    `state` is donated: use the returned one."""
    if self._compiled_step is None:
      # The state keeps the shardings it was created or restored with.
      shardings = jax.tree.map(lambda x: x.sharding, state)
      self._compiled_step = self.partitioner.partition(
          self._train_step,
          out_shardings=(shardings, self.partitioner.replicated()),
          donate_argnums=(0,))
    return self._compiled_step(state, batch, rng)


"""Optimizer set-up: T5X's learning-rate schedules and the gin-configurable
optimizers the trainer applies them with."""

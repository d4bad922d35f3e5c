"""Training library: schedules, optimizers, trainer, checkpoints, export.

Entry points (`fovea_jax.train`, `.eval`, `.infer`, `.export`) stay thin and call
into these modules, which are importable and tested on their own.
"""

"""The runs a gin file configures, and their command-line glue.

`train_lib.train`, `eval_lib.evaluate`, `infer_lib.infer` and
`export_lib.export` are what gin_configs/runs/*.gin bind; `entry_points` joins a
multi-process run (`distributed`), parses the gin flags (`gin_utils`) and calls
one of them for `python -m fovea_jax.{train,eval,infer,export}`. The pieces they
assemble live in fovea_jax.training, fovea_jax.optim and fovea_jax.data.
"""

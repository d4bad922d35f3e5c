"""Optional adapter: fovea_jax networks inside T5X's own trainer.

Our networks already have T5X's module interface, so T5X's
`models.EncoderDecoderModel` / `models.DecoderOnlyModel` drive them unchanged.
What T5X lacks is knowledge of our extra logical axis names (cache axes, FMA's
learned downsampling filters): `rules` adds them to T5X's partitioning and
Adafactor factorization rules, and `gin/` holds the files that swap our model
wrapper for T5X's. Nothing here is imported by fovea_jax itself; T5X is not a
dependency (it is not on the package index). Usage is in gin/*.gin headers.
"""

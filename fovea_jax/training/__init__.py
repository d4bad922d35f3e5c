"""Training library: the train step (trainer), the loop around it, checkpoints,
warm starts, model fingerprints, metrics writers and model-input shapes.

Nothing here reads flags or parses gin files: fovea_jax.runs builds these pieces
from a gin config, and they are importable and tested on their own.
"""

"""fovea_jax: hierarchical long-context attention in JAX/Flax."""

"""JAX's persistent compilation cache for the entry points, with its hits logged.

A rerun of the same configuration (same model, shapes, mesh and jax/jaxlib
version) loads its compiled programs from `cache_dir` instead of waiting for
XLA again; the run files bind `COMPILATION_CACHE_DIR` (T5X-style gin macro; None
turns the cache off). Every program loaded from the cache is logged, so a run
says when it skipped a compile.
"""
import logging
import os
from typing import Optional

import gin
import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache

# The events jax records for the persistent cache (jax._src.compiler).
_HIT = '/jax/compilation_cache/cache_hits'
_listening = []  # the directory the hit listener reports, once per process


def _log_hit(event: str, **kwargs) -> None:
  del kwargs
  if event == _HIT and _listening:
    logging.info('Compilation cache hit: loaded a compiled program from %s '
                 'instead of compiling it.', _listening[0])


@gin.configurable
def configure(cache_dir: Optional[str] = None,
              min_compile_seconds: float = 1.0) -> Optional[str]:
  """Points JAX's persistent compilation cache at `cache_dir` (`~` expanded).

  min_compile_seconds: programs that compile faster are not written (JAX's
  default threshold; 0 caches everything). Returns the directory used, or None
  when the cache is off. Call before the run compiles anything it should cache.
  """
  if cache_dir is None:
    if jax.config.jax_compilation_cache_dir is not None:  # an earlier run's
      jax.config.update('jax_compilation_cache_dir', None)
      jax_cache.reset_cache()
    return None
  cache_dir = os.path.abspath(os.path.expanduser(cache_dir))
  os.makedirs(cache_dir, exist_ok=True)
  jax.config.update('jax_persistent_cache_min_compile_time_secs',
                    float(min_compile_seconds))
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  jax_cache.set_cache_dir(cache_dir)
  # jax decides once per process, at its first compile, whether a cache is in
  # use: start that decision afresh for this directory.
  jax_cache.reset_cache()
  if not _listening:
    jax.monitoring.register_event_listener(_log_hit)
    _listening.append(cache_dir)
  _listening[0] = cache_dir
  logging.info('Compilation cache: %s', cache_dir)
  return cache_dir

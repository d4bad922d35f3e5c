"""Several processes, one global mesh: `jax.distributed` set up from the env.

On one machine the processes talk over CPU collectives (gloo); on a cluster the
same variables point at the coordinator host. Must run before any other JAX
call creates a backend.

  JAX_COORDINATOR_ADDRESS=host:port  JAX_NUM_PROCESSES=N  JAX_PROCESS_ID=i
"""
import os

import jax



def initialize_from_env() -> bool:
  """Joins the multi-process run described by the env; False if there is none."""
  address = os.environ.get('JAX_COORDINATOR_ADDRESS')
  if not address:
    return False
  try:
    num_processes = int(os.environ['JAX_NUM_PROCESSES'])
    process_id = int(os.environ['JAX_PROCESS_ID'])
  except (KeyError, ValueError) as e:
    raise ValueError('JAX_COORDINATOR_ADDRESS is set, so JAX_NUM_PROCESSES and '
                     'JAX_PROCESS_ID must be integers too.') from e
  # Only CPU devices use it; asking for the backend here would start it too
  # early, so set it unconditionally.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=address,
                             num_processes=num_processes, process_id=process_id)
  return True

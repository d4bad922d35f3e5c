"""The packed rows shared by the packed-example tests."""
import numpy as np

LENGTH = 45  # no block size below divides it


def segment_ids_of(lengths, n=LENGTH):
  """Runs 1, 2, ... of the given lengths, then padding (0)."""
  ids = np.zeros(n, np.int32)
  position = 0
  for i, run in enumerate(lengths):
    ids[position:position + run] = i + 1
    position += run
  return ids


# Row 0: a one-token segment and boundaries inside blocks and coarse windows;
# row 1: two segments, then padding after the last one.
SEGMENT_IDS = np.stack([segment_ids_of([7, 1, 20, 17]), segment_ids_of([30, 9])])

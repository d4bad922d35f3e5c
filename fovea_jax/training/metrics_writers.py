"""Scalar metrics to TensorBoard event files and a JSON-lines file.

One `MetricsWriter` per run directory: `write(step, {'loss': 2.1, ...})` appends
`{"step": 10, "loss": 2.1, ...}` to `<dir>/metrics.jsonl` and a scalar event per
name to `<events_dir>/events.out.tfevents.*` (training passes `<dir>/train`, as
T5X lays out its summaries). Only process 0 writes, so a multi-process
run produces one copy. Uses TensorBoard's own event writer (no TensorFlow).
"""
import json
import math
import os
import time
from typing import Mapping

import jax
import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


class MetricsWriter:

  def __init__(self, log_dir: str, jsonl_name: str = 'metrics.jsonl',
               events_dir: str | None = None):
    self.log_dir = log_dir
    self.events_dir = events_dir or log_dir
    self.jsonl_path = os.path.join(log_dir, jsonl_name)
    self._active = jax.process_index() == 0
    self._events = None
    if self._active:
      os.makedirs(self.events_dir, exist_ok=True)
      self._events = EventFileWriter(self.events_dir)

  def write(self, step: int, scalars: Mapping[str, float]):
    if not self._active:
      return
    values = {k: float(np.asarray(v)) for k, v in scalars.items()}
    record = {'step': int(step)}
    # JSON has no NaN/inf; keep them readable as strings.
    record.update({k: v if math.isfinite(v) else str(v) for k, v in values.items()})
    with open(self.jsonl_path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
    self._events.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                           summary=summary))

  def flush(self):
    if self._events is not None:
      self._events.flush()

  def close(self):
    if self._events is not None:
      self._events.close()
      self._events = None


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]

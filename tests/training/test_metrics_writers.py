"""Metrics land in JSON lines and in TensorBoard-readable event files."""
import glob

from tensorboard.backend.event_processing import event_accumulator

from fovea_jax.training import metrics_writers


def test_scalars_go_to_jsonl_and_tensorboard(tmp_path):
  writer = metrics_writers.MetricsWriter(str(tmp_path))
  writer.write(1, {'loss': 2.5, 'learning_rate': 0.01})
  writer.write(2, {'loss': float('nan')})
  writer.close()
  records = metrics_writers.read_jsonl(str(tmp_path / 'metrics.jsonl'))
  assert records == [{'step': 1, 'loss': 2.5, 'learning_rate': 0.01},
                     {'step': 2, 'loss': 'nan'}]
  assert len(glob.glob(str(tmp_path / 'events.out.tfevents.*'))) == 1
  # Read back the way TensorBoard itself does.
  events = event_accumulator.EventAccumulator(str(tmp_path))
  events.Reload()
  assert [(e.step, e.value) for e in events.Scalars('loss')][0] == (1, 2.5)
  assert abs(events.Scalars('learning_rate')[0].value - 0.01) < 1e-8

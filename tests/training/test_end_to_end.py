"""Train -> checkpoint -> evaluate -> infer -> export -> call the export, via gin
and the run files, on the stdlib summarization task with a tiny model."""
import json
import os

import jax
import numpy as np
import pytest

from fovea_jax.training import metrics_writers
from . import gin_runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp('run'))
  result = gin_runs.run('train', 'runs/pretrain.gin',
                        gin_runs.train_bindings(model_dir, 20))
  return model_dir, result


def test_training_lowers_the_loss_and_saves(trained):
  model_dir, result = trained
  assert int(result.state.step) == 20 and not result.stopped_by_signal
  records = metrics_writers.read_jsonl(os.path.join(model_dir, 'metrics.jsonl'))
  losses = [r['loss'] for r in records]
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
  assert {'accuracy', 'learning_rate', 'tokens_per_second'} <= set(records[-1])
  assert sorted(os.listdir(model_dir)) >= ['checkpoint_10', 'checkpoint_20']
  assert 'TRAIN_STEPS = 20' in open(os.path.join(model_dir, 'config.gin')).read()


def test_evaluate_reports_rouge_and_infer_writes_predictions(trained, tmp_path):
  model_dir, _ = trained
  results = gin_runs.run(
      'evaluate', 'runs/eval.gin',
      gin_runs.checkpoint_bindings(model_dir, 'EVAL_OUTPUT_DIR', tmp_path / 'e')
      + ['eval_lib.evaluate.num_examples = 8'])
  [metrics] = results.values()
  assert {'rouge1', 'rouge2', 'rougeL', 'rougeLsum'} <= set(metrics)
  saved = json.load(open(tmp_path / 'e' / 'results.json'))
  assert saved['step'] == 20
  path = gin_runs.run(
      'infer', 'runs/infer.gin',
      gin_runs.checkpoint_bindings(model_dir, 'INFER_OUTPUT_DIR', tmp_path / 'i')
      + ['NUM_EXAMPLES = 5'])
  rows = [json.loads(line) for line in open(path)]
  assert len(rows) == 5 and all(set(r) == {'input', 'prediction', 'target'}
                                for r in rows)
  assert rows[0]['target'] and rows[0]['input']


def test_export_is_callable_without_fovea_and_matches_the_model(trained,
                                                                tmp_path):
  model_dir, result = trained
  export_dir = tmp_path / 'export'
  gin_runs.run('export', 'runs/export.gin',
               gin_runs.checkpoint_bindings(model_dir, 'EXPORT_OUTPUT_DIR',
                                            export_dir, dataset=False) +
               ['EXPORT_BATCH_SIZE = 2'])
  manifest = json.load(open(export_dir / 'manifest.json'))
  assert manifest['step'] == 20 and set(manifest['functions']) == {'encode',
                                                                   'predict'}
  assert os.path.isdir(export_dir / 'params' / 'checkpoint_20')
  tokens = np.random.default_rng(0).integers(3, 259, (2, 64)).astype(np.int32)
  exported_tokens = gin_runs.call_export_without_fovea(export_dir, tokens,
                                                      tmp_path)
  model = gin_runs.standin_model()
  expected = model.predict_batch(
      jax.tree.map(jax.numpy.asarray, jax.device_get(result.state.params)),
      {'encoder_input_tokens': tokens,
       'decoder_input_tokens': np.zeros((2, 16), np.int32)})
  np.testing.assert_array_equal(exported_tokens, np.asarray(expected))

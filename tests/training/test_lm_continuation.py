"""A decoder-only fovea LM, trained two steps on stdlib_lm through the run files:
infer continues prompts ({'inputs': 256, 'targets': 64}), and export writes a
decode function that a Python process without fovea_jax loads and calls,
giving the same continuations as infer (same examples, same sampling key)."""
import json

import numpy as np
import pytest

from fovea_jax.tensorflow_runtime import seqio

from . import gin_runs

pytestmark = pytest.mark.slow

MODEL_GIN = ['sizes/decoder_only_tiny.gin', 'attention/fovea.gin']
TASK = "MIXTURE_OR_TASK_NAME = 'stdlib_lm'"
PROMPT, GENERATE = 256, 64
PROMPT_LENGTHS = {'inputs': PROMPT, 'targets': GENERATE}
BATCH = 2


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp('lm'))
  gin_runs.run('train', 'runs/pretrain.gin', [
      TASK, f"TASK_FEATURE_LENGTHS = {{'targets': {PROMPT + GENERATE}}}",
      'TRAIN_STEPS = 2', f"MODEL_DIR = '{model_dir}'", 'BATCH_SIZE = 8',
      'CHECKPOINT_PERIOD = 2', 'train_lib.train.show_progress = False'],
               model_gin=MODEL_GIN)
  return model_dir


def _checkpoint_bindings(model_dir, output_macro, output_dir, dataset=True):
  """infer's bindings, or export's (dataset=False: export reads no task)."""
  data = [TASK, f'BATCH_SIZE = {BATCH}'] if dataset else []
  return data + [f'TASK_FEATURE_LENGTHS = {PROMPT_LENGTHS}',
                 f"CHECKPOINT_PATH = '{model_dir}'",
                 f"{output_macro} = '{output_dir}'"]


def test_infer_continues_prompts_and_export_decodes_alike(model_dir, tmp_path):
  path = gin_runs.run('infer', 'runs/infer.gin', _checkpoint_bindings(
      model_dir, 'INFER_OUTPUT_DIR', tmp_path / 'infer') + [
          f'NUM_EXAMPLES = {BATCH}'], model_gin=MODEL_GIN)
  rows = [json.loads(line) for line in open(path)]
  # The validation split's first examples, cut as the task cuts them.
  examples = list(seqio.get_mixture_or_task('stdlib_lm').get_dataset(
      PROMPT_LENGTHS, split='validation', shuffle=False).take(BATCH)
                  .as_numpy_iterator())
  vocab = seqio.ByteVocabulary()
  assert len(rows) == BATCH
  for row, example in zip(rows, examples):
    assert len(example['inputs']) == PROMPT
    assert row['input'] == vocab.decode(example['inputs'].tolist())
    assert row['target'] == vocab.decode(example['targets'].tolist())
    assert 0 < len(row['prediction'].encode()) <= GENERATE

  export_dir = tmp_path / 'export'
  gin_runs.run('export', 'runs/export.gin', _checkpoint_bindings(
      model_dir, 'EXPORT_OUTPUT_DIR', export_dir, dataset=False) + [
          f'EXPORT_BATCH_SIZE = {BATCH}'], model_gin=MODEL_GIN)
  manifest = json.load(open(export_dir / 'manifest.json'))
  assert manifest['step'] == 2 and set(manifest['functions']) == {'predict'}
  assert 'huggingface' not in manifest  # no HF layout for a decoder-only LM
  prompts = np.stack([e['inputs'] for e in examples]).astype(np.int32)
  generated = gin_runs.call_export_without_fovea(export_dir, prompts, tmp_path)
  assert generated.shape == (BATCH, GENERATE)
  assert [vocab.decode(g.tolist()) for g in generated] == [
      r['prediction'] for r in rows]


def test_infer_on_an_lm_without_a_prompt_length_says_what_to_give(model_dir,
                                                                  tmp_path):
  with pytest.raises(ValueError, match="'inputs': 256, 'targets': 64"):
    gin_runs.run('infer', 'runs/infer.gin', [
        TASK, "TASK_FEATURE_LENGTHS = {'targets': 64}",
        f"CHECKPOINT_PATH = '{model_dir}'",
        f"INFER_OUTPUT_DIR = '{tmp_path}'"], model_gin=MODEL_GIN)

"""`python -m fovea_jax.quickstart` run twice in a row, on tiny settings: the
first run starts afresh over a run with other settings, the second reuses both
finished runs and replaces the export. (The full-size quickstart is too slow
for a test.)"""
import json
import os

from absl import flags
from absl.testing import flagsaver
import pytest

from fovea_jax import quickstart

pytestmark = pytest.mark.slow

# batch_size 8: the tests fake 8 devices.
TINY = dict(lm_steps=2, lm_length=64, lm_emb_dim=16, summarization_steps=2,
            summarization_emb_dim=16,
            inputs_length=64, targets_length=16, batch_size=8,
            summarization_batch_size=8, eval_examples=3)


@pytest.fixture(autouse=True)
def parsed_flags():
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(['quickstart'])


def _run(workdir, capsys, caplog, **overrides):
  with flagsaver.flagsaver(workdir=str(workdir), **dict(TINY, **overrides)):
    quickstart.main([])
  return capsys.readouterr().out + caplog.text


def test_second_run_reuses_the_runs_and_replaces_the_export(tmp_path, capsys,
                                                            caplog):
  stale = tmp_path / 'summarization' / 'model' / 'checkpoint_7'
  stale.mkdir(parents=True)  # Another run's folder, with other settings.
  (tmp_path / 'summarization' / 'quickstart_settings.json').write_text('{}')
  caplog.set_level('INFO')
  first = _run(tmp_path, capsys, caplog)
  assert (f'[summarization] {tmp_path / "summarization"} holds a run with '
          'other settings: starting afresh.') in first
  assert 'Found a finished run' not in first and 'Replacing' not in first
  summary = json.load(open(tmp_path / 'quickstart_summary.json'))
  lm, summ = summary['language_model'], summary['summarization']
  assert lm['train_steps'] == 2 and not lm['reused_run']
  assert lm['model'] > 0 and lm['baseline'] > 0 and 'unigram' in lm['baseline_name']
  assert summ['metric'].startswith('rouge1') and 'lead' in summ['baseline_name']
  assert len(summ['examples']) == 3 and all(
      set(row) == {'input', 'prediction', 'target'} and row['input']
      and row['target'] for row in summ['examples'])
  assert os.path.isfile(os.path.join(summ['export_dir'], 'manifest.json'))

  caplog.clear()
  second = _run(tmp_path, capsys, caplog)
  for part in ('language_model', 'summarization'):
    assert (f'[{part}] Found a finished run at step 2 in '
            f'{tmp_path / part / "model"}: reusing it') in second
  assert f'Replacing the export of step 2 in {summ["export_dir"]}' in second
  again = json.load(open(tmp_path / 'quickstart_summary.json'))
  assert again['language_model']['reused_run']
  assert again['language_model']['model'] == lm['model']
  assert again['summarization']['rouge'] == summ['rouge']


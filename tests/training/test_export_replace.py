"""Exporting again into the same folder replaces the earlier export; a folder
holding anything else is refused, untouched."""
import json
import os

import pytest

from fovea_jax.runs import export_lib

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow


def _fake_export(directory, step):
  """The entries `export` writes, with the manifest it writes last."""
  os.makedirs(directory / 'params' / f'checkpoint_{step}')
  os.makedirs(directory / 'huggingface')
  for name in ('params.safetensors', 'encode.jax_export', 'predict.jax_export',
               'huggingface/model.safetensors'):
    (directory / name).write_bytes(b'x')
  (directory / 'manifest.json').write_text(json.dumps({'step': step}))


def test_an_earlier_export_is_replaced_with_a_line_saying_so(tmp_path, caplog):
  _fake_export(tmp_path, 200)
  with caplog.at_level('INFO'):
    described = export_lib.clear_previous_export(str(tmp_path))
  assert described == 'the export of step 200'
  assert os.listdir(tmp_path) == []
  assert f'Replacing the export of step 200 in {tmp_path}' in caplog.text


def test_an_unfinished_export_is_replaced(tmp_path):
  os.makedirs(tmp_path / 'params' / 'checkpoint_7')  # Stopped before manifest.
  assert export_lib.clear_previous_export(str(tmp_path)) == (
      'an unfinished export')
  assert os.listdir(tmp_path) == []


def test_missing_or_empty_folder_needs_nothing(tmp_path):
  assert export_lib.clear_previous_export(str(tmp_path / 'new')) is None
  assert export_lib.clear_previous_export(str(tmp_path)) is None


def test_foreign_files_are_an_error_and_nothing_is_deleted(tmp_path):
  _fake_export(tmp_path, 3)
  (tmp_path / 'notes.txt').write_text('mine')
  with pytest.raises(FileExistsError, match=r'notes\.txt.*empty or new folder'):
    export_lib.clear_previous_export(str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == sorted([
      'params', 'huggingface', 'params.safetensors', 'encode.jax_export',
      'predict.jax_export', 'manifest.json', 'notes.txt'])

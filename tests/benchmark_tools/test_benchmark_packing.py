"""tools/benchmark_packing.py: packed and unpacked rows from the real pipeline."""
import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / 'tools'))
import benchmark_packing  # noqa: E402

pytestmark = pytest.mark.slow


def test_tiny_run_writes_packed_and_unpacked_rows(tmp_path):
  out = tmp_path / 'packing'
  benchmark_packing.main(['--schemes', 'fovea', '--lm_lengths', '256',
                          '--encdec_length', '0', '--batch', '2',
                          '--repeats', '1', '--batches', '4',
                          '--dense_memory_length', '512',
                          '--output', str(out)])
  result = json.loads(out.with_suffix('.json').read_text())
  rows = {r['packed']: r for r in result['rows']}
  assert set(rows) == {False, True}
  for r in rows.values():
    assert r['seconds'] > 0 and 0 < r['real_tokens'] <= 2 * 256
  # Packing fills rows with documents: never fewer real tokens than padding.
  assert rows[True]['real_tokens'] >= rows[False]['real_tokens']
  assert rows[True]['vs_unpacked'] == pytest.approx(
      rows[True]['real_tokens_per_s'] / rows[False]['real_tokens_per_s'])
  memory = result['dense_memory']
  assert 0 < memory['flash'] < memory['materialised']
  assert out.with_suffix('.png').stat().st_size > 0


def test_schemes_that_do_not_pack_are_refused():
  with pytest.raises(SystemExit):
    benchmark_packing.parse_args(['--schemes', 'h_transformer'])

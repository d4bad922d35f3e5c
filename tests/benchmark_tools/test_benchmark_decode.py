"""tools/benchmark_decode.py on tiny lengths: every row of both parts measured,
its rates derived, its JSON and plot written."""
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / 'tools'))
import benchmark_decode  # noqa: E402

pytestmark = pytest.mark.slow  # compiles whole generation programs


def test_rows_of_both_parts(tmp_path):
  result = benchmark_decode.main([
      '--input_lens', '64', '--prompt_lens', '64', '--new_tokens', '2',
      '--beams', '1,2', '--encdec_schemes', 'local', '--lm_schemes',
      'fovea,dense', '--prefill_max_len', '64', '--repeats', '1', '--no_hf',
      '--output', str(tmp_path / 'decode')])
  rows = result['rows']
  kinds = {(r['part'], r['scheme'], r['beams'], r['new_tokens']) for r in rows}
  assert kinds == {('encdec', 'local', 1, 2), ('encdec', 'local', 1, 1),
                   ('encdec', 'local', 2, 2), ('encdec', 'local', 2, 1),
                   ('lm', 'fovea', 1, 2), ('lm', 'fovea', 1, 0),
                   ('lm', 'dense', 1, 2), ('lm', 'dense', 1, 0)}
  for r in rows:
    assert r['seconds'] > 0 and r['ms_per_token'] > 0 and not r['failure']
  assert (tmp_path / 'decode.json').exists() and (tmp_path / 'decode.png').exists()


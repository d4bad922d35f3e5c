"""tools/benchmark_context_parallel.py on a tiny length: its bytes come from
the compiled collectives (dense attention's equal the computed all-gather's),
fovea's are far fewer, TGlobal and H-Transformer-1D compile on the sequence
mesh, and its table and JSON are written."""
import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / 'tools'))
import benchmark_context_parallel  # noqa: E402

pytestmark = pytest.mark.slow  # compiles sharded attention


def test_rows_measure_collectives(tmp_path):
  result = benchmark_context_parallel.main([
      '--lengths', '4096', '--devices', '2', '--schemes',
      'fovea,dense,longt5_tglobal,h_transformer',
      '--heads', '2', '--head_dim', '16', '--output', str(tmp_path / 'cp')])
  rows = {r['scheme']: r for r in result['rows']}
  dense, fovea = rows['dense'], rows['fovea']
  # The key mask's counts travel beside K/V: a little over the all-gather.
  assert 1.0 <= dense['forward_bytes'] / dense['allgather_forward_bytes'] < 1.02
  assert dense['train_bytes'] > 1.9 * dense['forward_bytes']
  assert 0 < fovea['forward_bytes'] < dense['forward_bytes'] / 2
  assert fovea['peak_bytes'] > 0
  # TGlobal moves its halo and the global groups' sums (an all-reduce, which
  # XLA names by mesh axes); XLA partitions H-Transformer-1D with all-to-alls.
  tglobal = rows['longt5_tglobal']
  assert 0 < tglobal['forward_bytes'] < dense['forward_bytes'] / 2
  assert rows['h_transformer']['train_bytes'] > 0
  text = (tmp_path / 'cp.txt').read_text()
  assert 'causal' in text.splitlines()[0] and 'fovea' in text
  assert json.loads((tmp_path / 'cp.json').read_text())['rows'][0]['length'] == 4096


def test_collective_bytes_reads_hlo_lines():
  hlo = '\n'.join([
      '  %cp = f32[2,8]{1,0} collective-permute(f32[2,8]{1,0} %x), '
      'channel_id=1, source_target_pairs={{0,1},{1,0}}',
      '  %ag = f32[4,8]{1,0} all-gather(f32[1,8]{1,0} %y), channel_id=2, '
      'replica_groups={{0,1,2,3}}, dimensions={0}',
      '  %ar = f32[10]{0} all-reduce(f32[10]{0} %z), channel_id=3, '
      'replica_groups={{0,1}}, to_apply=%add',
      '  %other = f32[10]{0} add(f32[10]{0} %a, f32[10]{0} %b)'])
  assert benchmark_context_parallel.collective_bytes(hlo) == {
      'collective-permute': 64, 'all-gather': 96.0, 'all-reduce': 40.0}


def test_collective_bytes_reads_iota_and_mesh_replica_groups():
  """XLA also writes replica groups as iota and mesh axes: the group size
  is read from each, and an unreadable spelling is refused, not counted as
  one device (which would count nothing)."""
  hlo = '\n'.join([
      '  %ar = (f32[4,8]{1,0}, f32[4,8]{1,0}) all-reduce(f32[4,8]{1,0} %x, '
      "f32[4,8]{1,0} %y), channel_id=3, replica_groups=mesh['axis_0'=1,"
      "'axis_1'=4,'axis_2'=2] {'axis_1'}, use_global_device_ids=true",
      '  %a2a = f32[2,8]{1,0} all-to-all(f32[2,8]{1,0} %z), channel_id=4, '
      'replica_groups=[2,4]<=[8], dimensions={0}'])
  assert benchmark_context_parallel.collective_bytes(hlo) == {
      'all-reduce': 2 * 256 * 3 / 4, 'all-to-all': 64 * 3 / 4}
  with pytest.raises(ValueError, match='replica groups'):
    benchmark_context_parallel.collective_bytes(
        '  %ag = f32[4]{0} all-gather(f32[1]{0} %y), replica_groups=?')

"""The interleaved A/B harness (benchmarks/interleave.py): alternation, paired ratios, refusal of noisy ratios;
the commit stamp results carry."""

import itertools
import subprocess

import pytest

from benchmarks import common, hlo_dots, interleave


def _fake(times, log, name):
  """A side whose k-th call 'takes' times[k] seconds, reported as its own measured part."""
  it = iter(times)

  def call():
    log.append(name)
    return float(next(it))

  return call


def test_sides_alternate_and_reverse_every_round():
  log = []
  run = interleave.interleave({'a': _fake(itertools.repeat(1.0), log, 'a'),
                               'b': _fake(itertools.repeat(2.0), log, 'b')}, rounds=3, warmup=2)
  assert log == ['a', 'b', 'a', 'b', 'a', 'b', 'b', 'a', 'a', 'b']  # warm-up a b, a b; then a b | b a | a b
  assert run['order'] == ['a', 'b', 'b', 'a', 'a', 'b']
  assert run['sides']['a']['wall']['median'] == 1.0 and run['sides']['b']['wall']['n'] == 3
  assert all('load' in m for m in run['sides']['a']['runs'])


def test_ratio_is_the_median_of_paired_rounds_with_work_scaling():
  log = []
  run = interleave.interleave({'slow': _fake([9, 4.0, 6.0, 8.0], log, 's'),
                               'fast': _fake([9, 2.0, 3.0, 4.1], log, 'f')}, rounds=3)
  r = interleave.ratio(run, 'slow', 'fast', bound=0.25)
  assert r['paired'] == pytest.approx([2.0, 2.0, 8.0 / 4.1])
  assert r['value'] == pytest.approx(2.0)
  useful = interleave.ratio(run, 'slow', 'fast', bound=0.25, work_slow=1.0, work_fast=3.0)
  assert useful['value'] == pytest.approx(6.0)


def test_noisy_ratio_is_refused_not_reported():
  log = []
  run = interleave.interleave({'slow': _fake([1, 4.0, 4.0, 4.0], log, 's'),
                               'fast': _fake([1, 2.0, 1.0, 3.0], log, 'f')}, rounds=3)
  r = interleave.ratio(run, 'slow', 'fast', bound=0.25)
  assert r['value'] is None and 'spread' in r['refused']
  assert interleave.format_ratio(r).startswith('refused')


def test_hlo_dots_tells_ynnpack_fusions_from_eigen_dots():
  text = '''
%fused_computation (param_0: f32[8,4], param_1: f32[4,3]) -> f32[8,3] {
  %param_0 = f32[8,4]{1,0} parameter(0)
  %param_1 = f32[4,3]{1,0} parameter(1)
  ROOT %dot.1 = f32[8,3]{1,0} dot(%param_0, %param_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main (x: f32[8,4], w: f32[4,3], g: f32[8,3]) -> f32[4,3] {
  %x = f32[8,4]{1,0} parameter(0)
  %w = f32[4,3]{1,0} parameter(1)
  %g = f32[8,3]{1,0} parameter(2)
  %ynn_fusion = f32[8,3]{1,0} fusion(%x, %w), kind=kCustom, calls=%fused_computation, backend_config={"fusion_config":{"kind":"__ynn_fusion"}}
  ROOT %dot = f32[4,3]{1,0} dot(%x, %g), lhs_contracting_dims={0}, rhs_contracting_dims={0}
}
'''
  found = {d['name']: d for d in hlo_dots.dots(text)}
  assert found['dot.1']['backend'] == 'ynnpack' and found['dot']['backend'] == 'eigen'
  assert found['dot']['gflop'] == pytest.approx(2 * 4 * 3 * 8 / 1e9)
  assert hlo_dots.summary(list(found.values()))['eigen']['count'] == 1


def test_commit_stamp_is_dirty_for_code_changes_not_for_notes(tmp_path, monkeypatch):
  def git(*args):
    subprocess.run(['git', *args], cwd=tmp_path, check=True, capture_output=True)

  git('init', '-q')
  (tmp_path / 'step.py').write_text('x = 1\n')
  (tmp_path / 'BENCHMARKS.md').write_text('results\n')
  git('add', '.')
  git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'one')
  monkeypatch.setattr(common, 'REPO', tmp_path)
  clean = common.git_commit()
  assert len(clean) == 40 and not clean.endswith('+dirty')
  (tmp_path / 'BENCHMARKS.md').write_text('new results\n')  # recording numbers does not change the code
  assert common.git_commit() == clean
  (tmp_path / 'step.py').write_text('x = 2\n')
  assert common.git_commit() == clean + '+dirty'


_ZEN4_LSCPU = """Architecture:                            x86_64
Vendor ID:                               AuthenticAMD
Model name:                              AMD EPYC 9B14
CPU family:                              25
CPU(s):                                  2
Thread(s) per core:                      2
L2 cache:                                1 MiB (1 instance)
Flags:                                   fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 avx512f avx512bw avx512_bf16 avx512_vnni vaes
"""


def test_cpu_facts_name_the_model_and_the_flags_that_pick_kernels():
  facts = common.cpu_facts(_ZEN4_LSCPU)
  assert facts['Model name'] == 'AMD EPYC 9B14' and facts['Vendor ID'] == 'AuthenticAMD' and facts['CPU(s)'] == '2'
  assert facts['kernel_flags'] == ['avx', 'avx2', 'avx512_bf16', 'avx512_vnni', 'avx512bw', 'avx512f', 'f16c',
                                   'fma', 'sse4_2']


@pytest.mark.slow  # imports jax, torch and transformers
def test_ab_header_records_this_cpu_and_the_hf_side_flushes_denormals(tiny_config):
  import argparse  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import ab, sides  # pylint: disable=g-import-not-at-top
  header = ab._header(argparse.Namespace(command='train'))
  cpu = header['host']['cpu']
  assert cpu.get('Model name') and isinstance(cpu['kernel_flags'], list)  # lscpu, or /proc/cpuinfo without it
  if cpu.get('Architecture', 'x86_64') == 'x86_64':
    assert 'sse4_2' in cpu['kernel_flags']
  torch.set_flush_denormal(False)
  try:
    assert not common.torch_flushes_denormals()
    model = sides.hf_model(tiny_config(vocab_size=64))  # every HF side of the harness is built here
    assert common.torch_flushes_denormals()
    weight = next(model.parameters())
    with torch.no_grad():  # a denormal gradient-sized value through a torch kernel becomes 0
      assert float((torch.full_like(weight, 2.0 ** -130) * 0.5).abs().max()) == 0.0
  finally:
    torch.set_flush_denormal(False)  # leave the process as it was for later tests

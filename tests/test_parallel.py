"Data-parallel runs on the CPU (gloo, two processes): torchrun and `--nproc` give the one-process scores, per-sample parts and nested subsets, and rank 0 alone writes."
import json, os, subprocess, sys, time
import numpy as np
import pytest
from conftest import cli, artifacts_dir, BIN
from qvl_nbsens.run import PARTS_FILE

SUITE = ('--sizes', 'small,medium', '--scopes', 'all-layers,lm-only', '--device', 'cpu')
TOL = 1e-4      # float32 on the CPU (the bound for gloo with two processes)


def _runs(out):
    from qvl_nbsens.tables import load_suite
    return {r.dir.name: r for r in load_suite(out).runs}


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOL*max(abs(a), abs(b), 1e-30)


def _same_run(one, two):
    "The scores, the per-sample parts and the chosen recipe of two runs agree within `TOL`."
    from qvl_nbsens.scoring import load_contributions
    ls1, ls2 = one.manifest.layer_sensitivity, two.manifest.layer_sensitivity
    assert ls1.keys() == ls2.keys() and len(ls1) > 10
    for h, r in ls1.items():
        for a, b in zip(r.scores, ls2[h].scores): assert _close(a, b), (one.dir.name, h, a, b)
        assert r.chosen_format == ls2[h].chosen_format, (one.dir.name, h)
    p1, p2 = (load_contributions(r.dir/PARTS_FILE) for r in (one, two))
    assert p1['keys'] == p2['keys'] and p1['parts'].shape == p2['parts'].shape
    assert np.abs(p1['parts'] - p2['parts']).max() <= TOL*np.abs(p1['parts']).max(), one.dir.name


@pytest.fixture(scope='module')
def suites(tmp_path_factory):
    "The same suite (small and medium, both scopes) in one process and as two torchrun processes: (folders, seconds)."
    tmp = tmp_path_factory.mktemp('dp')
    t = time.perf_counter(); cli('suite', *SUITE, '--out', tmp/'one', check=0); one_s = time.perf_counter() - t
    env = dict(os.environ, OMP_NUM_THREADS='1')
    t = time.perf_counter()
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2', '-m', 'qvl_nbsens', 'suite',
                        *SUITE, '--out', str(tmp/'two')], capture_output=True, text=True, timeout=900, env=env)
    two_s = time.perf_counter() - t
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp, one_s, two_s, r


def test_torchrun_suite_equals_one_process(suites):
    tmp, one_s, two_s, r = suites
    one, two = _runs(tmp/'one'), _runs(tmp/'two')
    assert sorted(one) == sorted(two) and len(one) == 4
    for name in one: _same_run(one[name], two[name])
    big = two['tiny_shapes_autoquant_all_layers_int8_medium'].manifest
    dp = big.search.data_parallel
    assert dp.ranks == 2 and dp.backend == 'gloo' and sum(dp.samples) == 128 and min(dp.samples) > 0, dp
    assert big.search.nested_subsets and 'small' in big.search.nested_subsets      # the medium pass served small, over both ranks
    small = two['tiny_shapes_autoquant_all_layers_int8_small'].manifest
    assert small.search.shared_pass == 'nested' and small.search.data_parallel is None
    assert r.stdout.count('suite index:') == 1, r.stdout            # rank 0 alone prints and writes the index
    assert not [p for p in (tmp/'two').iterdir() if p.name.startswith('.')], list((tmp/'two').iterdir())   # no stage left behind
    (artifacts_dir()/'data_parallel_cpu.json').write_text(json.dumps(dict(
        runs=4, processes=2, backend='gloo', one_process_s=round(one_s, 1), two_process_s=round(two_s, 1), cores=os.cpu_count(),
        medium_pass=dict(samples=dp.samples, calibration_s=dp.calibration_s, scoring_s=dp.scoring_s)), indent=2))
    print(f"suite in one process {one_s:.1f}s, two torchrun processes {two_s:.1f}s (CPU: the two share {os.cpu_count()} cores)")


def test_nproc_run_equals_one_process(suites, tmp_path):
    "`run --nproc 2` at small (its own pass, over two processes): the one-process suite's small run (the medium pass's nested subset)."
    tmp = suites[0]
    r = cli('run', '--size', 'small', '--device', 'cpu', '--nproc', '2', '--out', tmp_path, check=0)
    assert r.stdout.count('run directory:') == 1 and r.stdout.count('model loaded') == 1, r.stdout
    assert r.stderr.count('Enabling gradient checkpointing') == 1, r.stderr      # rank 0's warnings only
    from qvl_nbsens.tables import load_run
    two = load_run(tmp_path/'tiny_shapes_autoquant_all_layers_int8_small')
    _same_run(_runs(tmp/'one')['tiny_shapes_autoquant_all_layers_int8_small'], two)
    assert two.manifest.search.data_parallel.ranks == 2 and two.manifest.validation is not None     # rank 0 validated alone
    again = cli('run', '--size', 'small', '--device', 'cpu', '--nproc', '2', '--out', tmp_path, check=2)      # an existing run: rank 0's one line
    assert len(again.stderr.strip().splitlines()) == 1 and 'already exists' in again.stderr, again.stderr


def test_refusals_are_one_line(tmp_path):
    for args, says in ((('run', '--nproc', '0'), '--nproc 0'), (('suite', '--nproc', '2', '--executor', 'local'), '--executor local spreads runs'),
                       (('suite', '--nproc', '2', '--kernel-per-run'), '--kernel-per-run with several processes')):
        r = cli(*args, '--out', tmp_path/'x', check=2)
        assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1 and not (tmp_path/'x').exists(), (args, r.stderr)
    r = subprocess.run([str(BIN/'qvl-nbsens'), 'run', '--nproc', '2', '--out', str(tmp_path/'x')], capture_output=True, text=True,
                       env=dict(os.environ, WORLD_SIZE='2'), timeout=300)
    assert r.returncode == 2 and 'under torchrun' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr

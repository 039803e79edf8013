"The GPU benchmark script, smoke-tested on the CPU at tiny shape: every step it runs on the GPU, then its report."
import json, os, subprocess, sys
from conftest import ROOT, artifacts_dir


def test_bench_smoke_on_cpu(tmp_path):
    out, work = tmp_path/'out', tmp_path/'work'
    args = ['run', '--shape', 'tiny-shapes', '--steps', 'setup,handles,variants,profile,suite,same-work,validate,reference,cli-suite',
            '--scopes', 'lm-only', '--sizes', 'small', '--ref-sizes', 'small', '--validate-size', 'small', '--top-k', '3',
            '--batch-size', '8', '--n-train', '520', '--image-size', '64x48', '--ref-pad-to', '96', '--ref-score-size', '8',
            '--variants', 'stock,shared,shared-nockpt', '--variant-size', 'small', '--profile-variants', 'shared',
            '--out', str(out), '--work', str(work)]
    r = subprocess.run([sys.executable, str(ROOT/'bench'/'bench.py'), *args], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads((out/'bench.json').read_text())
    assert doc['handle_check'] == dict(handles=28, vision=15, text=13, unclassified=0, params=doc['handle_check']['params'])
    (p,) = [x for x in doc['project'] if x['kind'] == 'project']
    assert (p['scope'], p['samples'], p['score_samples']) == ('lm-only', 16, 16) and p['scoring_s'] > 0 and p['calibration_s'] > 0
    assert p['load'] == "copy of the kernel's loaded model"        # the suite kernel's path: one load, a copy per run
    (v,) = [x for x in doc['validation'] if x['kind'] == 'project']
    assert v['ground_truth']['handles'] == 6          # top 3 + 3 random
    (ref,) = doc['reference']
    assert (ref['samples'], ref['score_samples'], ref['forward_calls']) == (16, 8, 24)   # batch 1: 16 calibration + 8 scoring forwards
    (c,) = [x for x in doc['project_same_work'] if x['kind'] == 'project']
    assert (c['samples'], c['score_samples']) == (16, 8)                                  # the reference's cap
    assert [v['variant'] for v in doc['variants']] == ['stock', 'shared', 'shared-nockpt']
    assert all(v['vs_first']['spearman'] > 0.999 and v['vs_first']['max_rel_diff'] < 1e-3 for v in doc['variants'])  # speed, not results
    (prof,) = doc['profile']
    assert prof['cuda_total_ms'] > 0 and any(t['op'] == 'aten::mm' for t in prof['top'])
    assert doc['scoring_floor']['tflop'] > 0
    c = doc['cli_suite']                               # the suite as users run it: notebooks around the same runs
    (cr,) = c['runs']
    assert (cr['scope'], cr['size'], cr['samples']) == ('lm-only', 'small', 16) and cr['notebook_s'] >= cr['run_s'] > 0
    assert c['wall_s'] >= c['notebooks_s'] > 0
    r = subprocess.run([sys.executable, str(ROOT/'bench'/'bench.py'), 'report', str(out/'bench.json'), '--out', str(out), '--machine', 'bench'],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out/'results.json').read_text())
    assert {'gpu', 'suite_s', 'reference_suite_s', 'suite_speedup', 'scoring_floor_ratio', 'peak_gib', 'handles', 'two_gpu_spearman'} <= set(res)
    (pair,) = res['same_work_pairs']
    assert (pair['scope'], pair['score_samples']) == ('lm-only', 8) and res['suite_speedup'] > 0
    assert res['reference_runs_measured'] == 1 and res['measured_runs_lower_bound']['speedup'] > 0
    assert res['cli_suite']['wall_s'] == c['wall_s']
    assert '## Headline' in (out/'RESULTS.md').read_text() and 'qvl-nbsens suite' in (out/'RESULTS.md').read_text()
    (artifacts_dir()/'bench-smoke.json').write_text(json.dumps(res, indent=1))

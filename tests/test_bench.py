"""The GPU benchmark (bench/): its step registry, its error records, its report from the calls' JSON alone, and every
step smoke-tested on the CPU at tiny shape."""
import argparse, json, os, shutil, subprocess, sys
from conftest import ROOT, artifacts_dir

BENCH = ROOT/'bench'
sys.path.insert(0, str(BENCH))
import bench, bench_report  # noqa: E402

ALL_STEPS = ['setup', 'readme-suite', 'prepare', 'batch-invariance', 'one-pass', 'fit-80gb', 'handles', 'variants', 'suite', 'floor', 'profile', 'pairs', 'formats', 'multi-format', 'export', 'export-accuracy', 'same-work', 'validate', 'reference', 'cli-suite', 'two-gpu', 'data-parallel', 'sweep-two-gpu']
SMOKE_STEPS = ALL_STEPS[:-2]     # the two-process steps, a fresh command each, took 5.5 minutes together on the CPU: run by hand (bench/README.md)


def bench_cmd(*args, timeout=120):
    return subprocess.run([sys.executable, str(BENCH/'bench.py'), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_step_registry_is_listed():
    assert list(bench.STEPS) == ALL_STEPS and all(s.help and '\n' not in s.help for s in bench.STEPS.values())
    r = bench_cmd('--list-steps')
    assert r.returncode == 0 and [line.split()[0] for line in r.stdout.splitlines()[1:]] == ALL_STEPS
    r = bench_cmd('run', '--help')
    assert r.returncode == 0 and all(s.help[:40] in ' '.join(r.stdout.split()) for s in bench.STEPS.values())
    assert bench_cmd('run', '--steps', 'setup,nope', '--out', 'x').returncode != 0
    r = bench_cmd('run', '--steps', 'setup', '--floor-variants', 'nested,nope', '--out', 'x')     # refused before any step runs
    assert r.returncode == 2 and 'unknown variant nope' in r.stderr


def test_failed_step_is_recorded_and_the_rest_run(tmp_path):
    def boom(b): raise ValueError('no luck')
    reg = {'setup': bench.Step('setup', 'set up', 'setup', lambda b: dict(setup={})),
           'boom': bench.Step('boom', 'fails', 'boom', boom),
           'after': bench.Step('after', 'runs anyway', 'after', lambda b: dict(after=1))}
    b = bench.Bench(argparse.Namespace(), tmp_path, tmp_path, 'cpu', list(reg))
    bench.run_steps(b, list(reg), reg)
    doc = json.loads((tmp_path/'bench.json').read_text())
    assert doc['steps_done'] == ['setup', 'after'] and doc['after'] == 1 and set(doc['step_s']) == set(reg)
    (e,) = doc['errors']
    assert (e['step'], e['error']) == ('boom', 'ValueError: no luck') and 'in boom' in e['traceback']
    reg['setup'] = bench.Step('setup', 'set up', 'setup', boom)        # nothing runs without its set-up
    b = bench.Bench(argparse.Namespace(), tmp_path, tmp_path, 'cpu', list(reg))
    assert bench.run_steps(b, list(reg), reg)['errors'][0]['step'] == 'setup' and 'steps_done' not in b.doc


MACHINE = [f'h200-call{n}' for n in (*range(16, 30), 32, 33, 34, 35, 36)]   # the headline's calls (bench/README.md's report command)


def test_report_from_raw_json_alone(tmp_path):
    "bench/results.json's headline comes from the calls' JSON in bench/raw alone (no logs beside them)."
    order = [n for k in range(1, 40) for n in (f'h200-call{k}', f'h100-call{k}', f'h200x2-call{k}') if (BENCH/'raw'/f'{n}.json').is_file()]
    for n in order: shutil.copy(BENCH/'raw'/f'{n}.json', tmp_path/f'{n}.json')
    s = bench_report.write_report([json.loads((tmp_path/f'{n}.json').read_text()) for n in order], tmp_path, order, MACHINE)
    kept = json.loads((BENCH/'results.json').read_text())
    assert {k: v for k, v in s.items() if k != 'calls'} == {k: v for k, v in kept.items() if k != 'calls'} and s['calls'] == MACHINE
    assert (s['readme_suite_s'], s['scoring_floor_ratio'], s['suite_speedup']) == (143.9, 3.529, 22.8)    # the latest of each
    assert [r['wall_s'] for r in s['readme_suite_by_call']] == [164.31, 167.39, 146.82, 144.19, 129.94, 175.35, 143.9]   # every fresh machine's
    assert (s['pairs_run_on_gpu'], s['pairs_call']) == (20, 'h200-call28')          # every registry pair, at the 4B shape
    assert (s['formats_ran'], s['formats_combinations'], s['formats_call']) == (101, 101, 'h200-call29')   # every pair x granularity accepted
    assert (s['multi_format_run_s'], s['multi_format_call'], s['export_s'], s['export_call']) == (13.05, 'h200-call36', 5.82, 'h200-call35')
    assert (s['export_size_gib'], s['export_peak_gib']) == (3.829, 26.78)     # NVFP4 + FP8 at the 4B shape
    assert s['suite_call'] == 'h200-call27' and s['measured_runs_lower_bound']['speedup'] == 12.59   # the lower bound: call 20's own suite
    assert {p['reference_call'] for p in s['same_work_pairs']} == {p['project_call'] for p in s['same_work_pairs']} == {'h200-call20'}  # side by side
    pairs = s['same_work_pairs']            # the capped suite's runs (its own passes), and a ratio only for a run that computed one
    assert [p['scores_from'] or 'own' for p in pairs] == [f'qwen3_vl_4b_autoquant_all_layers_int8_{z}_score128' for z in ('large', 'large')] + ['own'] + \
        [f'qwen3_vl_4b_autoquant_all_layers_int8_{z}_score128' for z in ('small', 'medium', 'large')]
    assert [p['speedup'] is None for p in pairs] == [bool(p['scores_from']) for p in pairs] and s['medium_pair_speedup'] is None
    assert s['one_pass_min_spearman'] > 0.9999 and s['one_pass_max_rel_diff'] < 1e-3 and s['fit_80gb']['spare_gib'] > 15
    md = (tmp_path/'RESULTS.md').read_text()
    assert md == (BENCH/'RESULTS.md').read_text()
    assert 'not recorded' in md and 'Steps without a result' in md       # calls 2, 9, 12: what only their logs had


def test_bench_smoke_on_cpu(tmp_path):
    "Every step at tiny shape on the CPU; two-gpu, which needs two GPUs, fails and is recorded as the call's one error."
    out, work = tmp_path/'out', tmp_path/'work'
    r = bench_cmd('run', '--shape', 'tiny-shapes', '--steps', ','.join(SMOKE_STEPS),
                  '--scopes', 'lm-only', '--sizes', 'small', '--ref-sizes', 'small', '--validate-size', 'small', '--top-k', '3',
                  '--readme-sizes', 'small', '--batch-size', '8', '--n-train', '520', '--image-size', '64x48', '--ref-pad-to', '96', '--ref-score-size', '8',
                  '--variants', 'stock,shared,shared-nockpt', '--variant-size', 'small', '--pairs-list', 'wint4_aint8,wfp4_afp4',
                  '--candidates', 'wfp8_afp8,wint8_aint8', '--multi-bits', '8.5', '--accuracy-bits', '8.5', '--profile-variants', 'shared', '--floor-variants', 'nested,ungrouped',
                  '--out', out, '--work', work, timeout=1500)
    doc = json.loads((out/'bench.json').read_text())
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    (err,) = doc['errors']
    assert err['step'] == 'two-gpu' and 'needs at least 2 GPUs' in err['error'], err
    assert doc['steps_done'] == SMOKE_STEPS[:-1] and set(doc['step_s']) == set(SMOKE_STEPS)
    assert doc['handle_check'] == dict(handles=28, vision=15, text=13, unclassified=0, params=doc['handle_check']['params'])
    (p,) = [x for x in doc['project'] if x['kind'] == 'project']
    assert (p['scope'], p['samples'], p['score_samples']) == ('lm-only', 16, 16) and p['scoring_s'] > 0 and p['calibration_s'] > 0
    assert p['load'] == "copy of the kernel's loaded model"        # the suite kernel's path: one load, a copy per run
    assert p['total_s'] > 0 and p['tokens'] > 0 and p['score_reduction'] == 'shared' and p['grad_checkpointing'] is True
    (v,) = [x for x in doc['validation'] if x['kind'] == 'project']
    assert v['ground_truth']['handles'] == 6          # top 3 + 3 random
    (ref,) = doc['reference']
    assert (ref['samples'], ref['score_samples'], ref['forward_calls']) == (16, 8, 24)   # batch 1: 16 calibration + 8 scoring forwards
    (c,) = [x for x in doc['project_same_work'] if x['kind'] == 'project']
    assert (c['samples'], c['score_samples']) == (16, 8)                                  # the reference's cap
    assert [x['variant'] for x in doc['variants']] == ['stock', 'shared', 'shared-nockpt']
    assert [(x['score_reduction'], x['grad_checkpointing']) for x in doc['variants']] == [('separate', True), ('shared', True), ('shared', False)]
    assert all(x['vs_first']['spearman'] > 0.999 and x['vs_first']['max_rel_diff'] < 1e-3 for x in doc['variants'])  # speed, not results
    (prof,) = doc['profile']                           # totals from the profiler object, not its printed table
    assert prof['clock'] == 'cpu' and prof['total_ms'] == prof['self_cpu_total_ms'] > 0 and any(t['op'] == 'aten::mm' for t in prof['top'])
    assert prof['warm_scoring_s'] > 0 and prof['first_scoring_s'] > 0 and prof['gpu_busy'] is None and prof['batch_size'] == 8
    assert doc['scoring_floor']['tflop'] > 0
    fv = doc['floor_variants']                         # the settings change speed, not results
    assert [(x['variant'], x['length_grouped'], x['cudnn_attention']) for x in fv] == [('nested', True, False), ('ungrouped', False, False)]
    assert fv[1]['vs_first']['spearman'] > 0.999 and fv[1]['vs_first']['max_rel_diff'] < 1e-3 and fv[1]['padded_tokens'] >= fv[0]['padded_tokens']
    rs = doc['readme_suite']      # the README's command at one size (every run validated: the suite's cost on the CPU): lm-only from all-layers
    assert [(x['scope'], x['size'], bool(x['scores_from'])) for x in rs['runs']] == [('all-layers', 'small', False), ('lm-only', 'small', True)]
    assert doc['readme_suite_s'] > 0 and rs['runs'][1]['scores_from'] == rs['runs'][0]['dir']
    assert all((x['length_grouped'], x['cudnn_attention']) == (True, False) for x in rs['runs'])   # the defaults, recorded
    assert doc['one_pass_min_spearman'] > 0.9999 and doc['one_pass_max_rel_diff'] < 1e-3 and len(doc['one_pass']['runs']) == 1
    assert doc['batch_invariance_max_rel_diff'] < 1e-3 and [x['batch_size'] for x in doc['batch_invariance']['runs']] == [1, 4, 16]
    assert doc['fit_80gb'] == dict(skipped='needs a CUDA GPU')
    ok, gpu_only = doc['pairs']                       # a composed pair searched at the shape; a GPU-only one refused, recorded
    assert (ok['pair'], ok['ok'], ok['finite'], ok['deployment'], ok['handles']) == ('wint4_aint8', True, True, None, 28), ok
    assert not gpu_only['ok'] and 'needs a CUDA GPU' in gpu_only['error'] and doc['pairs_failed'] == ['wfp4_afp4'], gpu_only
    refused = {(r['pair'], r['granularity']) for r in doc['formats'] if not r['ok']}      # every combination; on the CPU the GPU-only pairs refused
    assert refused == {(r['pair'], r['granularity']) for r in doc['formats'] if r['pair'].startswith(('wfp4', 'wmxfp8'))}
    assert doc['formats_ran'] == doc['formats_combinations'] - len(refused) and not doc['formats_mismatch']
    mf, ex = doc['multi_format'], doc['export']        # a search over two formats, its recipe exported and checked
    assert mf['candidates'] == ['wfp8_afp8', 'wint8_aint8'] and doc['multi_format_run_s'] > 0 and set(mf['chosen']) <= {'FP8_DEFAULT_CFG', 'INT8_DEFAULT_CFG', 'NONE'}
    assert ex['checks']['weights']['within_rounding'] and abs(ex['checks']['kl_rel_diff']) <= 0.1 and doc['export_s'] > 0 and ex['size_bytes'] > 0
    (bf16, ck) = doc['export_accuracy']
    assert ck['checkpoint'] == '8.5 bits' and set(ck['slot_accuracy']) == {'color', 'shape', 'background'} and not doc['export_accuracy_failed']
    c = doc['cli_suite']                               # the suite as users run it: notebooks around the same runs
    (cr,) = c['runs']
    assert (cr['scope'], cr['size'], cr['samples']) == ('lm-only', 'small', 16) and cr['notebook_s'] >= cr['run_s'] > 0
    assert c['wall_s'] >= c['notebooks_s'] > 0
    r = bench_cmd('report', out/'bench.json', '--out', out, '--machine', 'bench')
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out/'results.json').read_text())
    assert {'gpu', 'suite_s', 'reference_suite_s', 'suite_speedup', 'scoring_floor_ratio', 'peak_gib', 'handles', 'two_gpu_spearman', 'readme_suite_s',
            'batch_invariance_max_rel_diff', 'one_pass_min_spearman', 'one_pass_max_rel_diff'} <= set(res)
    (pair,) = res['same_work_pairs']        # one run, its own pass: a pair ratio, but not the suite's
    assert (pair['scope'], pair['score_samples'], pair['scores_from']) == ('lm-only', 8, None) and pair['speedup'] > 0 and res['suite_speedup'] is None
    assert res['reference_runs_measured'] == 1 and res['measured_runs_lower_bound']['speedup'] > 0
    assert res['cli_suite']['wall_s'] == c['wall_s']
    md = (out/'RESULTS.md').read_text()
    assert '## Headline' in md and 'qvl-nbsens suite' in md and 'under each setting' in md and '**Step two-gpu failed**' in md and 'CPU time' in md
    (artifacts_dir()/'bench-smoke.json').write_text(json.dumps(res, indent=1))

"Sensitivity runs through the CLI on the embedded default: the scope x method x size matrix, resume after a kill, report-only mode."
import json, math, signal, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import BIN, cli, artifacts_dir

SIZES = ('small', 'medium', 'large')
METHOD_SIZES = {'gradient': SIZES, 'kl_div': SIZES[:2]}   # kl_div's large run (4 minutes on two cores) adds no case medium lacks


def manifest_of(run_dir: Path):
    "The run's typed manifest, read as every consumer reads it."
    from qvl_nbsens.manifest import read_manifest
    return read_manifest(run_dir/f'{run_dir.name}_quant_manifest.json')


# Faults are injected by patching a step of the pipeline in the child process (no fault switch in the package):
# the recorder's first scoring batch, or the step right after ModelOpt's search returns.
FAULTS = {'kill-at-scoring': "import qvl_nbsens.scoring as s; s.ScoreRecorder.begin_batch = lambda self, b: os.kill(os.getpid(), signal.SIGKILL)",
          'kill-after-search': "import qvl_nbsens.autoquant as a; a.restore_eval = lambda model: os.kill(os.getpid(), signal.SIGKILL)"}


def run(out, *args, fault=None, check=0):
    t = time.time()
    cmd = [str(BIN/'qvl-nbsens')] if fault is None else \
          [sys.executable, '-c', f"import os, signal, sys\n{FAULTS[fault]}\nfrom qvl_nbsens.cli import main\nsys.exit(main())"]
    r = subprocess.run([*cmd, 'run', '--out', str(out), *map(str, args)], capture_output=True, text=True, timeout=900)
    if check is not None: assert r.returncode == check, f"rc={r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r, time.time() - t


@pytest.fixture(scope='module')
def matrix(tmp_path_factory):
    "Both scopes x both methods x their sizes, each in its own process; timings and peak RSS kept as an artefact."
    out = tmp_path_factory.mktemp('runs')
    res, lines = {}, ['| scope | method | size | batch | wall s (process) | autoquant s | peak RSS MiB |', '|---|---|---|---:|---:|---:|---:|']
    for scope in ('all-layers', 'lm-only'):
        for method in ('gradient', 'kl_div'):
            for size in METHOD_SIZES[method]:
                bs = 8
                # ground truth is measured (and tested) by the suite; here once, through the plain CLI run
                val = '--validate' if (scope, method, size) == ('all-layers', 'gradient', 'medium') else '--no-validate'
                r, wall = run(out, '--scope', scope, '--method', method, '--size', size, '--batch-size', bs, val)
                rd = Path(r.stdout.strip().splitlines()[-1].split('run directory: ')[-1])
                m = manifest_of(rd)
                res[scope, method, size] = (rd, m)
                lines.append(f"| {scope} | {method} | {size} | {bs} | {wall:.1f} | {m.timings.autoquant_total:.1f} | {m.timings.peak_rss_mib:.0f} |")
    (artifacts_dir()/'fixture-runs.md').write_text('\n'.join(lines) + '\n')
    return res


@pytest.mark.parametrize('scope', ['all-layers', 'lm-only'])
@pytest.mark.parametrize('method', ['gradient', 'kl_div'])
def test_runs_are_complete_finite_within_budget(matrix, scope, method):
    scores = {}
    for size in METHOD_SIZES[method]:
        rd, m = matrix[scope, method, size]
        assert sorted(p.name for p in rd.iterdir()) == sorted([f'{rd.name}_quant_manifest.json', f'{rd.name}_autoquant_state.pt',
                                                              'per-layer-sensitivity.json', 'per-layer-sensitivity.md', 'per-sample-scores.npz', 'report.html'])
        ls = m.layer_sensitivity
        assert all(math.isfinite(r.sensitivity) for r in ls.values())
        assert m.search.is_satisfied and m.search.achieved_effective_bits <= 8.0 + 1e-9
        assert m.dataset.num_samples == {'small': 16, 'medium': 128, 'large': 512}[size] == m.dataset.score_samples
        towers = {r.tower for r in ls.values()}
        if scope == 'lm-only':
            assert towers == {'text'} and len(ls) == 13
            assert m.search.constraints['cost'] == {'excluded_module_name_patterns': ['*visual*']}
        else:
            assert towers == {'vision', 'text'} and len(ls) == 28
        if scope == 'lm-only':      # image+caption calibration: the all-layers run of the same inputs computed the scores
            assert m.search.scores_from == matrix['all-layers', method, size][0].name
            assert m.forward_calls == {'calibration': 0, 'scoring': 0}
        else: assert m.forward_calls['calibration'] == m.dataset.num_batches and m.search.scores_from is None
        scores[size] = {h: r.sensitivity for h, r in ls.items()}
        rep = json.loads((rd/'per-layer-sensitivity.json').read_text())
        assert [list(r)[:4] for r in rep['layer_sensitivity']] == [['layer', 'num_bits', 'sensitivity', 'size_cost']]*len(ls)
        sens = [r['sensitivity'] for r in rep['layer_sensitivity']]
        assert sens == sorted(sens, reverse=True)
    assert len({json.dumps(x, sort_keys=True) for x in scores.values()}) == len(scores)     # each size its own scores


def test_validate_flag(matrix):
    _, m = matrix['all-layers', 'gradient', 'medium']
    assert m.validation.measured_handles == 28 and len(m.pareto.validated) == 3
    _, m = matrix['lm-only', 'kl_div', 'small']
    assert m.validation is None and m.pareto is None and m.confidence.score_method == 'kl_div'


@pytest.mark.parametrize('method', ['gradient', 'kl_div'])
def test_lm_only_from_the_all_layers_pass_equals_its_own_pass(tmp_path, matrix, method):
    "Scoring perturbs one handle at a time, so an lm-only run scored on its own equals the one re-solved from the all-layers pass."
    r, _ = run(tmp_path, '--scope', 'lm-only', '--method', method, '--no-shared-passes', '--no-validate')
    own = manifest_of(Path(r.stdout.strip().splitlines()[-1].split('run directory: ')[-1]))
    shared = matrix['lm-only', method, 'small'][1]
    assert own.search.scores_from is None and own.forward_calls['scoring'] > 0
    assert list(own.layer_sensitivity) == list(shared.layer_sensitivity)
    for h, r in shared.layer_sensitivity.items():
        assert math.isclose(r.sensitivity, own.layer_sensitivity[h].sensitivity, rel_tol=1e-5)
        assert r.chosen_format == own.layer_sensitivity[h].chosen_format and r.rank == own.layer_sensitivity[h].rank


def test_state_reloads_and_resolves_other_budgets(matrix):
    import torch, modelopt.torch.quantization as mtq
    rd, m = matrix['all-layers', 'gradient', 'medium']
    state = torch.load(rd/m.autoquant_state.file, weights_only=False)
    assert set(state['candidate_stats']) >= set(m.layer_sensitivity)
    cfg = mtq.get_auto_quantize_config(state, {'effective_bits': 12.0})
    assert 'quant_cfg' in cfg


def test_existing_run_is_not_overwritten(matrix):
    rd, m = matrix['all-layers', 'gradient', 'small']
    r, _ = run(rd.parent, '--size', 'small', check=2)
    assert 'already exists' in r.stderr and 'Traceback' not in r.stderr
    assert manifest_of(rd).created == m.created


@pytest.mark.parametrize('fault, restored', [('kill-at-scoring', ('calibration',)), ('kill-after-search', ('calibration', 'scoring'))])
def test_resume_after_kill(tmp_path, matrix, fault, restored):
    r, _ = run(tmp_path, '--size', 'medium', fault=fault, check=None)
    assert r.returncode == -signal.SIGKILL
    name = 'tiny_shapes_autoquant_all_layers_int8_medium'
    assert not (tmp_path/name).exists()
    assert (tmp_path/f'.{name}.partial'/'autoquant_checkpoint.pt').is_file()
    run(tmp_path, '--size', 'medium')
    m = manifest_of(tmp_path/name)
    for phase in ('calibration', 'scoring'):
        assert (m.forward_calls[phase] == 0) == (phase in restored), m.forward_calls
    assert m.search.checkpoint_found and m.search.calibration_restored
    assert m.search.scores_restored == ('scoring' in restored)
    ref = matrix['all-layers', 'gradient', 'medium'][1].layer_sensitivity
    for h, rec in m.layer_sensitivity.items(): assert math.isclose(rec.sensitivity, ref[h].sensitivity, rel_tol=1e-5)
    assert not list(tmp_path.glob('.*'))


def test_partial_run_with_other_arguments_is_refused(tmp_path):
    r, _ = run(tmp_path, '--size', 'small', '--max-caption-tokens', '64', fault='kill-at-scoring', check=None)
    assert r.returncode == -signal.SIGKILL
    r, _ = run(tmp_path, '--size', 'small', check=2)
    assert 'holds a partial run made with other inputs (max_caption_tokens 64 → 128)' in r.stderr, r.stderr
    run(tmp_path, '--size', 'small', '--force')


def test_partial_run_resumes_under_another_batch_size(tmp_path, matrix):
    "Scores do not depend on the batch size, so a run killed at batch 4 resumes at batch 8 with its calibration."
    r, _ = run(tmp_path, '--size', 'small', '--batch-size', '4', fault='kill-at-scoring', check=None)
    assert r.returncode == -signal.SIGKILL
    run(tmp_path, '--size', 'small', '--batch-size', '8')
    m = manifest_of(tmp_path/'tiny_shapes_autoquant_all_layers_int8_small')
    assert m.search.calibration_restored and m.forward_calls == {'calibration': 0, 'scoring': 2}
    assert (m.dataset.batch_size, m.dataset.batch_size_source) == (8, 'given')
    ref = matrix['all-layers', 'gradient', 'small'][1].layer_sensitivity
    for h, rec in m.layer_sensitivity.items(): assert math.isclose(rec.sensitivity, ref[h].sensitivity, rel_tol=1e-4)


def test_text_only_calibration_and_other_pairs(tmp_path):
    run(tmp_path, '--scope', 'lm-only', '--calib-mode', 'text')
    m = manifest_of(tmp_path/'tiny_shapes_autoquant_int8_lm_small_textcalib')
    assert m.scheme.calib_mode == 'text' and m.dataset.seq_len_max < 40  # captions only, no image tokens
    # an older name (alias) of a deployable pair, and a composed pair at another granularity (tests/test_pairs.py runs every pair)
    for args, folder, pair, fmt, deployment in (
            (('--pair', 'wint8'), 'int8wo_small_score8', 'wint8_afp16', 'INT8_WEIGHT_ONLY_CFG', 'int8_wo'),
            (('--pair', 'wint4_aint8', '--granularity', 'w_group64'), 'wint4_aint8_small_score8_w_group64', 'wint4_aint8', 'wint4_aint8+w_group64', None)):
        run(tmp_path, *args, '--score-size', '8')
        rd = tmp_path/f'tiny_shapes_autoquant_all_layers_{folder}'
        m = manifest_of(rd)
        assert m.scheme.pair == pair and m.dataset.score_samples == 8 and m.forward_calls['scoring'] == 1
        assert (m.scheme.formats, m.scheme.deployment, m.scheme.simulation_only) == ([fmt], deployment, deployment is None)
        assert all(math.isfinite(r.sensitivity) for r in m.layer_sensitivity.values())
        report = (rd/'per-layer-sensitivity.md').read_text()
        assert ('**simulation only**' in report) == (deployment is None) and (f'ModelOpt `{deployment}` checkpoint' in report) == (deployment is not None), report[:1500]


@pytest.mark.parametrize('setup, expect', [
    (lambda d: None, 'does not exist'),
    (lambda d: d.mkdir(), 'no config.json'),
    (lambda d: (d.mkdir(), (d/'config.json').write_text('{"model_type": "qwen2_vl"}')), "'qwen2_vl' model, not Qwen3-VL"),
])
def test_wrong_model_dir(tmp_path, setup, expect):
    setup(tmp_path/'m')
    r, _ = run(tmp_path/'out', '--model-dir', tmp_path/'m', check=2)
    assert expect in r.stderr and 'Traceback' not in r.stderr
    assert not (tmp_path/'out').exists() or not list((tmp_path/'out').iterdir())


def test_report_only_on_own_manifest(tmp_path, matrix):
    rd, m = matrix['lm-only', 'gradient', 'large']
    cli('report', rd/f'{rd.name}_quant_manifest.json', '--out', tmp_path, check=0)
    assert json.loads((tmp_path/'per-layer-sensitivity.json').read_text()) == json.loads((rd/'per-layer-sensitivity.json').read_text())
    assert (tmp_path/'per-layer-sensitivity.md').read_text() == (rd/'per-layer-sensitivity.md').read_text()
    r = cli('report', rd/f'{rd.name}_quant_manifest.json', '--out', tmp_path, check=2)
    assert 'already exists' in r.stderr


def _legacy_manifest():
    "A manifest in the earlier driver-script tool's schema, with real 4B module names."
    fm = ['INT8_DEFAULT_CFG(effective-bits: 8.0)', 'NONE(effective-bits: 16.0)']
    ls, layers, i = {}, {}, 0
    for l in range(2):
        for mod, cost in (('self_attn.q_proj', 1.6e7), ('self_attn.o_proj', 6.5e6), ('mlp.gate_proj', 5e7), ('mlp.down_proj', 2.5e7)):
            name = f'model.language_model.layers.{l}.{mod}'
            i += 1
            ls[name + '.quant_recipe'] = dict(formats=fm, scores=[i*1e-7, 0.0], costs=[cost, 2*cost], importance=i*1e-7, rank=i)
            layers[name] = dict(quantized=True, module_type='QuantLinear')
    ls['model.visual.blocks.3.mlp.linear_fc2.quant_recipe'] = dict(formats=fm, scores=[float('nan'), 0.0], costs=[2e6, 4e6], importance=float('nan'), rank=0)
    return dict(scheme=dict(name='int8_autoquant_all_layers_small', auto_quantize_bits=8.0, auto_quantize_method='gradient',
                            auto_quantize_score_size=128, coverage_mode='full', coverage_fraction=1.0, quant_formats=['INT8_DEFAULT_CFG']),
                model=dict(id='Qwen/Qwen3-VL-4B-Instruct'), num_quantized_layers=len(layers), layers=layers,
                autoquant_state=dict(keys=['best', 'candidate_stats'], constraints=dict(effective_bits=8.0), score=3.6e-6, is_satisfied=True),
                layer_sensitivity=ls, sensitivity_ranking=[dict(name=k, importance=v['importance']) for k, v in ls.items()])


def test_report_only_on_legacy_manifest(tmp_path):
    p = tmp_path/'qwen3_vl_4b_int8_quant_manifest.json'
    p.write_text(json.dumps(_legacy_manifest()))  # json writes NaN as the older tool did
    cli('report', p, check=0)
    rep = json.loads((tmp_path/'per-layer-sensitivity.json').read_text())
    layers = [r['layer'] for r in rep['layer_sensitivity']]
    assert layers[0] == 'model.language_model.layers.1.mlp.down_proj' and layers[-1] == 'model.visual.blocks.3.mlp.linear_fc2'
    assert rep['layer_sensitivity'][-1]['sensitivity'] is None and rep['layer_sensitivity'][-1]['non_finite'] == 'nan'
    md = (tmp_path/'per-layer-sensitivity.md').read_text()
    assert 'non-finite' in md and '| `model.language_model.layers.1.mlp.down_proj` | text | 8 |' in md


@pytest.mark.parametrize('mutate, expect', [
    (lambda d: d.update(model=[1]), 'model must be a valid dictionary'),
    (lambda d: d['layer_sensitivity']['model.language_model.layers.0.mlp.down_proj.quant_recipe'].update(costs='x'), "costs must be a valid list, got 'x'"),
    (lambda d: d.update(scheme=[1]), 'not a quant manifest'),
])
def test_report_rejects_malformed_manifests(tmp_path, mutate, expect):
    d = _legacy_manifest(); mutate(d)
    p = tmp_path/'m.json'; p.write_text(json.dumps(d))
    r = cli('report', p, check=2)
    assert expect in r.stderr and 'Traceback' not in r.stderr
    assert not (tmp_path/'per-layer-sensitivity.json').exists()

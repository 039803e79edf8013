"""Turn the JSON of `bench.py run` calls into bench/RESULTS.md and bench/results.json.

    python bench/bench.py report bench/raw/*.json --out bench --machine CALL,CALL,...

`--machine` names calls that ran one after another on one machine (the device tool reports the machine warm and the
same): their project and reference runs are compared with each other, and the headline comes from them. Calls that
record `gpu_uuid` are grouped by it without being named. Other calls are listed as earlier calls.

Every number comes from the calls' own JSON (`bench.json`, kept as `bench/raw/<call>.json`); logs are not read. A
number an older call did not write into its JSON (its CUDA-extension compile when it ran inside the first run, a
step's result when the call stopped before saving it, the profiler's total) is reported as "not recorded".
"""
import json
from pathlib import Path

ORDER = [(sc, sz) for sc in ('all-layers', 'lm-only') for sz in ('small', 'medium', 'large')]
NOT_RECORDED = 'not recorded'

def _step_keys() -> dict:
    "{step name: the key of a call's JSON that holds its result}, from bench.py's step registry."
    import sys
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path: sys.path.insert(0, here)
    from bench import STEPS
    return {s.name: s.key for s in STEPS.values()}

def first_run_compile(doc: dict):
    """Seconds ModelOpt's CUDA extension took inside the call's first project run, when the call did not time it apart
    at set-up: that run's manifest timing (`cuda_extension_s`). None when timed apart or not recorded."""
    if doc.get('cuda_ext_s'): return None
    runs = _runs(doc)
    return (runs[0].get('cuda_extension_s') or None) if runs else None

def missing_steps(doc: dict) -> list:
    "Steps a call was asked to run whose result its JSON lacks (failed, or the call stopped before saving it)."
    keys = _step_keys()
    return [s for s in doc.get('steps') or [] if s in keys and doc.get(keys[s]) in (None, [], {})]

def _runs(doc, key='project'):
    return [r for r in doc.get(key) or [] if r.get('kind') == 'project']

def _load(doc, key='project'):
    return next((r['wall_s'] for r in doc.get(key) or [] if r.get('kind') == 'project-load'), 0.0)

def project_time(doc: dict, run: dict, key='project') -> tuple[float, float]:
    """A project run's share of the suite: its wall time, its share of the one model load, less the one-time compile
    of ModelOpt's CUDA extension when it ran inside this (the call's first) run. Returns (seconds, compile taken out)."""
    runs = _runs(doc, key)
    compile_s = (first_run_compile(doc) or 0.0) if key == 'project' and runs and run is runs[0] else 0.0
    return run['wall_s'] - compile_s + _load(doc, key)/len(runs), compile_s

def same_work_pairs(docs: list) -> list:
    """Reference runs against the project's run of the same scope and size, among `docs` (one call, or calls on one
    machine), where both did the same work: the same calibration samples and the same number of scored samples. A
    project run of the reference's own call comes first (measured side by side), its capped suite before its default
    one (the capped suite's runs share its own passes); another call's run only where that call has none."""
    def runs(d):
        out = {}
        for key in ('project_same_work', 'project'):
            for p in _runs(d, key): out.setdefault((p['scope'], p['size'], p['samples'], p['score_samples']), (d, p, key))
        return out
    by_doc = {d['name']: runs(d) for d in docs}
    out = []
    for d in docs:
        for r in d.get('reference') or []:
            k = (r['scope'], r['size'], r.get('samples') or 0, r['score_samples'])
            hit = by_doc[d['name']].get(k) or next((by_doc[o['name']][k] for o in docs if k in by_doc[o['name']]), None)
            if hit is None: continue
            pd, p, key = hit
            ps, compile_s = project_time(pd, p, key)
            shared = p.get('scores_from')     # its calibration and scoring were another run's: only a whole suite compares
            out.append(dict(gpu=d.get('gpu'), reference_call=d['name'], project_call=pd['name'], scope=r['scope'], size=r['size'],
                            samples=p['samples'], score_samples=p['score_samples'], reference_s=r['wall_s'], project_s=round(ps, 1),
                            compile_excluded_s=compile_s, scores_from=shared, speedup=None if shared else round(r['wall_s']/ps, 2)))
    return out

def equal_work(pairs: list) -> list:
    """`pairs` when their sums compare equal work, else []: the whole suite (all six runs, so every pass a run reuses is
    among them), or runs that each computed their own pass."""
    return pairs if len({(p['scope'], p['size']) for p in pairs}) == len(ORDER) or not any(p.get('scores_from') for p in pairs) else []

def _ratio(pairs):
    ref, proj = sum(p['reference_s'] for p in pairs), sum(p['project_s'] for p in pairs)
    return (round(ref, 1), round(proj, 1), round(ref/proj, 2)) if pairs else (None, None, None)

def _floor_ratio(doc: dict):
    f = doc.get('scoring_floor') or {}
    return round(f['measured_s']/(f['tflop']/f['bf16_tflops']), 3) if f.get('tflop') and f.get('bf16_tflops') else f.get('ratio')

def summarize(docs: list, machine: list | None = None) -> dict:
    "The headline numbers (the keys bench/results.json promises), from the calls of one machine."
    head = [d for d in docs if d['name'] in machine] if machine else docs
    suite = next((d for d in reversed(head) if d.get('project_suite_s') and len(_runs(d)) == 6), None)
    pairs = same_work_pairs(head)
    whole = pairs if len({(p['scope'], p['size']) for p in pairs}) == len(ORDER) else []
    medium = equal_work([p for p in pairs if p['size'] == 'medium'])
    refs = {(r['scope'], r['size']): r for d in head for r in d.get('reference') or []}
    measured = [k for k in ORDER if k in refs]
    lower, proj = None, {}
    # the default runs score every sample (as much work as the reference's or more); those of a reference's own call first (side by side)
    for d in [x for x in reversed(head) if x.get('reference')] + ([suite] if suite else []) + head:
        for p in _runs(d): proj.setdefault((p['scope'], p['size']), (project_time(d, p)[0], p.get('scores_from')))
    both = [k for k in measured if k in proj]
    if both and (len(both) == len(ORDER) or not any(proj[k][1] for k in both)):    # see `equal_work`
        proj = {k: v[0] for k, v in proj.items()}
        ref_s, proj_s = sum(refs[k]['wall_s'] for k in both), sum(proj[k] for k in both)
        lower = dict(runs=[' '.join(k) for k in both], reference_s=round(ref_s, 1), project_s=round(proj_s, 1), speedup=round(ref_s/proj_s, 2))
    two = next((dict(d['two_gpu'], gpu=d.get('gpu'), call=d['name']) for d in reversed(docs) if d.get('two_gpu')), None)
    on_gpus = lambda key, n: next((dict(d[key], gpu=d.get('gpu'), call=d['name']) for d in reversed(docs)
                                   if (d.get(key) or {}).get(n) == 2 and d.get('gpu')), None)     # measured on two GPUs of one host
    dp2, sw2 = on_gpus('data_parallel', 'processes'), on_gpus('sweep_two_gpu', 'gpus')
    hc = next((d['handle_check'] for d in reversed(head) if d.get('handle_check')), None) or next((d['handle_check'] for d in docs if d.get('handle_check')), None)
    floor = dict((suite or {}).get('scoring_floor') or {})
    if floor.get('tflop') and floor.get('bf16_tflops'): floor['ratio_exact'] = _floor_ratio(suite)
    compile_s = [ext_build_s(d) or first_run_compile(d) for d in head if ext_build_s(d) or first_run_compile(d)]
    ref_all = [refs[k]['wall_s'] for k in ORDER if k in refs]
    latest = lambda key: next((d[key] for d in reversed(head) if d.get(key) is not None), None)
    as_written = [d for d in head if d.get('readme_suite') and not d['readme_suite'].get('sizes')]   # not a --readme-sizes subset
    return dict(readme_suite_s=next((d['readme_suite_s'] for d in reversed(as_written)), None), batch_invariance_max_rel_diff=latest('batch_invariance_max_rel_diff'),
                pairs_run_on_gpu=latest('pairs_run_on_gpu'), pairs_call=next((d['name'] for d in reversed(head) if d.get('pairs_run_on_gpu') is not None), None),
                formats_ran=latest('formats_ran'), formats_combinations=latest('formats_combinations'),
                formats_call=next((d['name'] for d in reversed(head) if d.get('formats_ran') is not None), None),
                multi_format_run_s=latest('multi_format_run_s'), multi_format_call=next((d['name'] for d in reversed(head) if d.get('multi_format_run_s') is not None), None),
                export_s=latest('export_s'), export_call=next((d['name'] for d in reversed(head) if d.get('export_s') is not None), None),
                export_size_gib=next((d['export']['size_gib'] for d in reversed(head) if d.get('export')), None),
                export_peak_gib=next((d['export']['peak_gib'] for d in reversed(head) if d.get('export')), None),
                one_pass_min_spearman=latest('one_pass_min_spearman'), one_pass_max_rel_diff=latest('one_pass_max_rel_diff'),
                fit_80gb=next(({k: v for k, v in d['fit_80gb'].items() if k != 'run'} for d in reversed(head) if (d.get('fit_80gb') or {}).get('run')), None),
                readme_suite=next(({k: v for k, v in d['readme_suite'].items() if k not in ('stdout_tail',)} | dict(call=d['name'])
                                   for d in reversed(as_written)), None),
                readme_suite_by_call=[dict(call=d['name'], wall_s=d['readme_suite_s'], runs_total_s=d['readme_suite'].get('runs_total_s'),
                                           cuda_ext_build_s=ext_build_s(d))      # the build's time is a gauge of the machine's host speed
                                      for d in as_written],
                gpu=sorted({d['gpu'] for d in head if d.get('gpu')}), calls=[d['name'] for d in head],
                suite_gpu=(suite or {}).get('gpu'), suite_call=(suite or {}).get('name'), suite_s=(suite or {}).get('project_suite_s'),
                suite_compile_s=first_run_compile(suite) if suite else None, cuda_ext_compile_s=compile_s,
                reference_suite_s=round(sum(ref_all), 1) if len(ref_all) == 6 else None,
                reference_runs_measured=len(measured), reference_runs_s={' '.join(k): refs[k]['wall_s'] for k in measured},
                suite_speedup=_ratio(whole)[2], same_work=dict(zip(('reference_s', 'project_s', 'speedup'), _ratio(whole)), runs=len(whole)),
                medium_pair_speedup=_ratio(medium)[2], measured_runs_lower_bound=lower, same_work_pairs=pairs,
                scoring_floor_ratio=floor.get('ratio_exact', floor.get('ratio')), scoring_floor=floor,
                peak_gib=max((r.get('peak_gib') or 0) for r in _runs(suite)) if suite else None,
                suites_by_call=[dict(call=d['name'], gpu=d.get('gpu'), suite_s=d['project_suite_s'], peak_gib=max((r.get('peak_gib') or 0) for r in _runs(d)),
                                     bf16_tflops=d.get('bf16_tflops'), scoring_floor_ratio=_floor_ratio(d))
                                for d in docs if d.get('project_suite_s') and len(_runs(d)) == 6],
                handles=hc, two_gpu_spearman=(two or {}).get('spearman'), two_gpu=two,
                dp_two_gpu_speedup=(dp2 or {}).get('speedup'), dp_two_gpu_spearman=(dp2 or {}).get('spearman'),
                dp_two_gpu=None if dp2 is None else {k: v for k, v in dp2.items() if k not in ('one', 'many')},
                sweep_two_gpu_speedup=(sw2 or {}).get('speedup'), sweep_two_gpu=sw2,
                cli_suite=next(({k: v for k, v in d['cli_suite'].items() if k != 'runs'} | dict(gpu=d.get('gpu'), call=d['name'])
                                for d in reversed(docs) if d.get('cli_suite')), None))

def _fmt(x, spec: str) -> str:
    return '—' if x is None else format(x, spec)

def ext_build_s(d: dict):
    """Seconds ModelOpt's CUDA extensions took to build at set-up: the sum of their entries in `cuda_ext` (calls 25-26
    wrote the whole `qvl-nbsens prepare` process as `cuda_ext_s`), else `cuda_ext_s`."""
    mo = [v for k, v in (d.get('cuda_ext') or {}).items() if k.startswith('modelopt')]
    return round(sum(mo), 1) if mo else d.get('cuda_ext_s')

def prepare_process_s(d: dict):
    "Wall seconds of the `qvl-nbsens prepare` process (from call 25: it also compiles the score kernel), or None."
    return d.get('prepare_s', d['cuda_ext_s'] if any(not k.startswith('modelopt') for k in d.get('cuda_ext') or {}) else None)

def _extension(d: dict) -> str:
    "How long ModelOpt's CUDA extension took to get ready in a call, as its JSON says."
    if ext_build_s(d) is not None:
        extra = [f"{k} {v} s" for k, v in (d.get('cuda_ext') or {}).items() if not k.startswith('modelopt')]
        proc = f"; the `qvl-nbsens prepare` process {prepare_process_s(d)} s, with {', '.join(extra)}" if prepare_process_s(d) else ''
        return f"{ext_build_s(d)} s at set-up (timed apart from the runs{proc})"
    if first_run_compile(d): return f"{first_run_compile(d)} s inside the first run (its manifest's timings)"
    if d.get('gpu') == 'cpu': return 'not used (CPU)'
    return f"{NOT_RECORDED} (not timed apart; compiled inside the first run that needed it)"

def _call_section(d: dict) -> list:
    L = [f"## {d['name']}: {', '.join(d['steps'])} — {d.get('gpu')} ×{d.get('count')}, {d['date']}", '',
         f"Versions: {', '.join(f'{k} {v}' for k, v in d['versions'].items())}. Shape {d['shape']}, batch size {d['batch_size'] or 'chosen by each run'}, "
         f"images {d['setup'].get('images', '640x480 (one size), 2 captions an image')}, "
         f"measured bf16 matmul {d.get('bf16_tflops') or '—'} TFLOP/s. Set-up: checkpoint {d['setup']['checkpoint_s']} s, data {d['setup']['data_s']} s."
         + f" ModelOpt's CUDA extension: {_extension(d)}.", '']
    for e in d.get('errors') or []: L += [f"**Step {e['step']} failed**: `{e['error'][:400]}`", '']
    done, failed = d.get('steps_done'), {e['step'] for e in d.get('errors') or []}
    gone = [s for s in missing_steps(d) if s not in failed and (done is None or s not in done)]
    if gone: L += [f"Steps without a result in this call's JSON: {', '.join(gone)} ({NOT_RECORDED}: the call stopped with an error or "
                   "was cut off before the step saved it; bench/raw/HISTORY.md says which).", '']
    if d.get('handle_check'): L += [f"Recipe handles at this shape: {d['handle_check']}", '']
    if d.get('readme_suite'):
        c = d['readme_suite']
        L += ["### The README's command (`qvl-nbsens suite --model-dir … --coco-root …`, a fresh process, no tuning flag)", '',
              f"Wall {c['wall_s']} s (suite's own clock {c['invocation_s']} s; the runs {c['runs_total_s']} s). ModelOpt's CUDA extension "
              f"{'was' if c['extension_built_before'] else 'was not'} built on this machine before it.", '',
              '| Run | Samples / scored | Batch (how chosen) | Run s | Calibration s | Scoring s | Search s | Peak GPU GiB | Scores from | Fake-quant kernels |',
              '|---|---|---|---:|---:|---:|---:|---:|---|---|']
        L += [f"| {r['dir']} | {r['samples']} / {r['score_samples']} | {r['batch_size']} ({r['batch_size_source']}) | {r['run_s']} | {r['calibration_s']} | "
              f"{r['scoring_s']} | {r['search_s']} | {r['peak_gpu_gib']} | {r['scores_from'] or 'own pass'} | {r['fake_quant_kernels']} |" for r in c['runs']]
        L.append('')
    if d.get('fit_80gb') and 'run' in d['fit_80gb']:
        f = d['fit_80gb']
        L += [f"80 GB card (simulated on this GPU): the automatic batch size is {f['batch_size']}; all-layers {f['run']['size']} peaked at "
              f"{f['peak_gib']} GiB of {f['card_gib']} GiB, {f['spare_gib']} GiB spare ({f['run']['wall_s']} s).", '']
    if d.get('batch_invariance'):
        bi = d['batch_invariance']
        L += [f"### Batch invariance (all-layers small; scores against batch {bi['reference_batch']})", '',
              '| Batch | Wall s | Scoring s | Peak GiB | Spearman | Max rel. diff | Top 10 same |', '|---:|---:|---:|---:|---:|---:|---|']
        L += [f"| {r['batch_size']} | {r['wall_s']} | {r['scoring_s']} | {r['peak_gib']} | {_fmt(r['spearman'], '.6f')} | {_fmt(r['max_rel_diff'], '.1e')} | {r['top10_same']} |"
              for r in bi['runs']]
        L.append('')
    if d.get('one_pass'):
        op = d['one_pass']
        L += ["### One pass vs separate runs (the README suite's LM-only runs against runs scoring on their own)", '',
              '| Run | Scores from | Shared run s | Own pass s | Spearman | Max rel. diff | Top 10 same |', '|---|---|---:|---:|---:|---:|---|']
        L += [f"| {r['run']} | {r['scores_from']} | {r['shared_run_s']} | {r['own_pass_s']} | {_fmt(r['spearman'], '.6f')} | {_fmt(r['max_rel_diff'], '.1e')} | {r['top10_same']} |"
              for r in op['runs']]
        L.append('')
    if d.get('pairs'):
        L += [f"### Quant pairs (each searched once: all-layers, its own pass; {d.get('pairs_run_on_gpu')} ran)", '',
              "`Exporter sees`: ModelOpt's `get_quantization_format` on a two-layer model quantized with the pair on this device.", '',
              '| Pair | ModelOpt format | Deployable as | Exporter sees | Wall s | Calibration s | Scoring s | Peak GiB | Result |', '|---|---|---|---|---:|---:|---:|---:|---|']
        L += [f"| `{r['pair']}` | {', '.join(r['formats'])} | {r['deployment'] or 'simulation only'} | {r.get('checkpoint_format', NOT_RECORDED)} | "
              f"{r.get('wall_s', NOT_RECORDED)} | {r.get('calibration_s', NOT_RECORDED)} | {r.get('scoring_s', NOT_RECORDED)} | {r.get('peak_gib', NOT_RECORDED)} | "
              f"{'ok' if r['ok'] and r.get('finite') else r.get('error', 'non-finite scores')} |" for r in d['pairs']]
        L.append('')
    if d.get('multi_format'):
        m = d['multi_format']
        L += [f"### Mixed-precision search over {', '.join(f'`{c}`' for c in m['candidates'])} at {m['effective_bits']:g} effective bits", '',
              f"All-layers {m['size']}, its own pass: **{m['wall_s']} s** (calibration {m['calibration_s']} s, scoring {m['scoring_s']} s), "
              f"peak {m['peak_gib']} GiB, {m['handles']} handles, {_fmt(m['achieved_effective_bits'], '.3f')} effective bits reached. Chosen: "
              + ', '.join(f"{k} ×{v}" for k, v in m['chosen'].items()) + '.', '']
    if d.get('export'):
        e, c = d['export'], d['export']['checks']
        L += ['### Export of that recipe (`qvl-nbsens export`)', '',
              f"ModelOpt's `export_hf_checkpoint`: **{e['export_s']} s**; the whole command (load, restore, held-out KL, export, reload, checks) "
              f"{e['command_s']} s. Checkpoint **{e['size_gib']} GiB** on disk ({', '.join(e['quant_algos'])}), peak GPU memory "
              f"{e['peak_gib']} GiB. Held-out KL per caption token: {c['kl_fake_quant']:.4e} (the run's recipe, fake-quantized), "
              f"{c.get('kl_fake_quant_as_exported', float('nan')):.4e} (as the exporter re-scales it), {c['kl_exported']:.4e} (the checkpoint, "
              f"reloaded): {c['kl_rel_diff']:.1%} apart. Weights: {c['weights']['layers']} layers, at most {c['weights'].get('max_steps', float('nan')):.2f} "
              f"rounding steps apart, {c['weights'].get('differing_fraction', float('nan')):.1%} of elements re-rounded. Kept in BF16 by the exporter's limits: "
              + (', '.join(f'`{h}`' for h in e['adjusted']) or 'none') + '.', '']
    if d.get('export_accuracy'):
        L += ['### Exported checkpoints of the trained fixture: greedy caption slot accuracy', '',
              '| Checkpoint | Bits reached | Formats | KL (run) | KL (as exported) | KL (checkpoint) | Colour | Shape | Background |',
              '|---|---:|---|---:|---:|---:|---:|---:|---:|']
        for r in d['export_accuracy']:
            if r.get('error'): L.append(f"| {r['checkpoint']} | {r['error']} | | | | | | | |"); continue
            a = r['slot_accuracy']
            L.append(f"| {r['checkpoint']} | {_fmt(r.get('achieved_effective_bits'), '.2f')} | {', '.join(f'{k} ×{v}' for k, v in (r.get('formats') or {}).items()) or '—'} | "
                     f"{_fmt(r.get('kl_fake_quant'), '.2e')} | {_fmt(r.get('kl_fake_quant_as_exported'), '.2e')} | {_fmt(r.get('kl_exported'), '.2e')} | "
                     f"{a['color']:.3f} | {a['shape']:.3f} | {a['background']:.3f} |")
        L.append('')
    if d.get('formats'):
        bad = [f"`{r['pair']}` at `{r['granularity']}`: {r.get('error') or 'non-finite output'}" for r in d['formats'] if not (r['ok'] and r.get('finite'))]
        L += [f"### Quant pair × granularity on a two-layer model ({d.get('formats_ran')} of {d.get('formats_combinations')} combinations ran)", '',
              f"Exporter format other than the registry's deployment: {', '.join(f'`{p}` at `{g}`' for p, g in d.get('formats_mismatch') or []) or 'none'}. "
              f"Did not run: {'; '.join(bad) or 'none'}.", '']
    if d.get('variants'):
        L += ['### Scoring variants (same runs, one model load; scores compared with the first variant)', '',
              '| Variant | Scope | Size | Wall s | Calibration s | Scoring s | Peak GiB | Spearman vs first | Max rel. diff vs first |',
              '|---|---|---|---:|---:|---:|---:|---:|---:|']
        for r in d['variants']:
            if r.get('error'): L.append(f"| {r['variant']} | {r['scope']} | {r['size']} | {r['error']} | | | | | |"); continue
            v = r.get('vs_first') or {}
            L.append(f"| {r['variant']} | {r['scope']} | {r['size']} | {r['wall_s']} | {r['calibration_s']} | {r['scoring_s']} | {r['peak_gib']} | "
                     f"{_fmt(v.get('spearman'), '.6f')} | {_fmt(v.get('max_rel_diff'), '.1e')} |")
        L.append('')
    if d.get('floor_variants'):
        L += ["### The all-layers large pass under each setting (`floor` step: one process, in this order; the first run pays "
              "the process's warm-ups; scores compared with the first)", '',
              '| # | Variant | Batches | Attention | Batch | Padded / real tokens | Calibration s | Scoring s | Floor ratio | Peak GiB | Spearman vs first | Max rel. diff vs first |',
              '|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|']
        for i, r in enumerate(d['floor_variants'], 1):
            if r.get('error'): L.append(f"| {i} | {r['variant']} | {r['error'][:120]} | | | | | | | | | |"); continue
            v, f = r.get('vs_first') or {}, r.get('scoring_floor') or {}
            grouped = {True: 'length-grouped', False: 'subset order'}.get(r.get('length_grouped'), 'subset order')
            attn = {True: 'cuDNN', False: 'flash / mem.-efficient'}.get(r.get('cudnn_attention'),    # calls 21, 22: before the setting
                                                                       'flash / mem.-efficient' if 'nocudnn' in r['variant'] else 'cuDNN')
            L.append(f"| {i} | {r['variant']} | {grouped} | {attn} | {r['batch_size']} | {r['padded_tokens']/r['tokens']:.2f} | {r['calibration_s']} | "
                     f"{r['scoring_s']} | {_fmt(f.get('ratio'), '.2f')} | {r['peak_gib']} | {_fmt(v.get('spearman'), '.6f')} | {_fmt(v.get('max_rel_diff'), '.1e')} |")
        L.append('')
    for p in d.get('profile') or []:
        tot, clock = p.get('total_ms', p.get('cuda_total_ms')), p.get('clock', 'cuda').upper()   # older calls: cuda_total_ms, or none
        ops = [t for t in p['top'] if t['op'].split('::')[0] in ('aten', 'tensorrt', 'autograd') or t['op'].startswith('_score')][:12]   # ops, not their kernels
        L += [f"### Profile of scoring ({p['variant']}, all-layers, {p['batches']} batches): {clock} time "
              f"{f'{tot} ms' if tot else f'total {NOT_RECORDED} (shares not computed)'}", '']
        if p.get('warm_scoring_s'):   # from call 25: the profiled pass is the third of three, and the second is timed without the profiler
            L += [f"All-layers {p['size']} at batch {p['batch_size']}, the third of three passes in one process. Scoring without the profiler: {p['first_scoring_s']} s "
                  f"(the first of the three), {p['warm_scoring_s']} s (the second). GPU kernel time of the profiled pass / the second's scoring time: "
                  f"{_fmt(p.get('gpu_busy'), '.1%')} (the GPU's busy share of a warm scoring phase).", '']
        L += [
              f'| Op | Self {clock} ms | Share | Calls |', '|---|---:|---:|---:|']
        L += [f"| `{t['op']}` | {t['self_ms']} | {t['self_ms']/tot:.1%} | {t['calls']} |" if tot else f"| `{t['op']}` | {t['self_ms']} | — | {t['calls']} |" for t in ops]
        L.append('')
    for key, title in (('project', 'Project runs (one model load, a fresh copy per run)'),
                       ('project_same_work', "Project runs with the reference's scoring cap"),
                       ('validation', 'Project runs with ground truth (top 20 + 20 random handles, 32 held-out samples)')):
        rs = _runs(d, key)
        if not rs: continue
        L += [f"### {title}", '', '| Scope | Size | Samples | Scored | Pass | Wall s | Copy s | Encode s | Calibration s | Scoring s | Search s | Validation s | Reports s | Samples/s | Peak GiB |',
              '|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
        for r in rs:      # a run that took another run's pass did not calibrate or score: no throughput of its own
            src = r.get('scores_from')
            rate = '—' if src else f"{r['samples']/r['wall_s']:.1f}"
            L.append(f"| {r['scope']} | {r['size']} | {r['samples']} | {r['score_samples']} | {'`' + src + '`' if src else 'own'} | "
                     f"{r['wall_s']} | {r['load_s']} | {r['encode_s']} | {r['calibration_s']} | {r['scoring_s']} | {r['search_s']} | {r.get('validation_s') or '—'} | "
                     f"{r['reports_s']} | {rate} | {r['peak_gib']} |")
        total = d.get('project_suite_s') if key == 'project' else d.get(f'{key}_s')
        L += ['', f"Model load (once): {_load(d, key)} s." + (f" Whole suite: {total} s." if total else ''), '']
        for r in rs:
            g = r.get('ground_truth')
            if g: L.append(f"- Ground truth {r['scope']} {r['size']}: Spearman(score, KL) {g['kl']['spearman']:.2f} (p {g['kl']['p']:.1e}); "
                           f"vs |Δloss| {g['abs_delta_loss']['spearman']:.2f} (p {g['abs_delta_loss']['p']:.1e}); vs signed Δloss {g['delta_loss']['spearman']:.2f} "
                           f"(p {g['delta_loss']['p']:.1e}); {g['handles']} handles")
        if any(r.get('ground_truth') for r in rs): L.append('')
    if d.get('reference'):
        L += ['### Reference driver (fresh process per run, batch 1, padded to 512, labels = input ids, scoring capped at 128)', '',
              '| Scope | Size | Samples | Scored | Wall s (process) | Load s | AutoQuant s | Peak GiB |', '|---|---|---:|---:|---:|---:|---:|---:|']
        for r in d['reference']:
            L.append(f"| {r['scope']} | {r['size']} | {r.get('samples') or '—'} | {r['score_samples']} | {r['wall_s']} | {r['load']} | {r['autoquant']} | "
                     f"{round(r['peak_gib'], 2) if r.get('peak_gib') else '—'} |")
        L.append('')
    if d.get('cli_suite'):
        c = d['cli_suite']
        L += ['### `qvl-nbsens suite` (a fresh process; every run\'s notebook executed in one kernel that keeps the model)', '',
              '| Scope | Size | Samples / scored | Run s (manifest) | Notebook s | Notebook overhead s |', '|---|---|---|---:|---:|---:|']
        L += [f"| {r['scope']} | {r['size']} | {r['samples']} / {r['score_samples']} | {r['run_s']} | {r['notebook_s']} | "
              f"{round(r['notebook_s'] - r['run_s'], 1) if r['notebook_s'] is not None and r['run_s'] is not None else '—'} |" for r in c['runs']]
        L += ['', f"Whole command: {c['wall_s']} s (suite's own clock {c['invocation_s']} s; runs {c['runs_total_s']} s, their notebooks {c['notebooks_s']} s).", '']
    if d.get('scoring_floor'): L += [f"Scoring FLOP floor ({d['scoring_floor']['run']}): {d['scoring_floor']}", '']
    if d.get('two_gpu'): L += [f"Two-GPU check (all-layers small, `device_map='auto'` over {d['two_gpu']['gpus']} GPUs vs one GPU): {d['two_gpu']}", '']
    if d.get('data_parallel'):
        x = d['data_parallel']
        L += [f"Data-parallel run (all-layers {x['size']}, one process vs {x['processes']} through `run --nproc`): {x['speedup']}× on the command's wall time "
              f"({x['one']['wall_s']} s vs {x['many']['wall_s']} s), {x['pass_speedup']}× on the pass (calibration + scoring, slowest rank); "
              f"Spearman {x['spearman']}, max relative difference {x['max_rel_diff']}.", '']
    if d.get('sweep_two_gpu'):
        x = d['sweep_two_gpu']
        L += [f"Sweep over {x['jobs']} local jobs ({', '.join(x['pairs'])} × both scopes, {x['size']}; {x['runs']} runs): {x['speedup']}× "
              f"({x['serial_s']} s serial vs {x['local_s']} s); Spearman ≥ {x['min_spearman']}, max relative difference {x['max_rel_diff']}.", '']
    return L

def write_report(docs: list, out: Path, names: list | None = None, machine: list | None = None):
    "Write `out/results.json` (the headline, then every call's JSON) and `out/RESULTS.md`; returns the headline."
    for i, d in enumerate(docs): d['name'] = names[i] if names else f'call{i+1}'
    if not machine:   # calls that recorded their GPU's UUID: the latest UUID's calls
        uu = [d.get('gpu_uuid') for d in docs if d.get('gpu_uuid')]
        machine = [d['name'] for d in docs if uu and d.get('gpu_uuid') == uu[-1]] or None
    unknown = set(machine or []) - {d['name'] for d in docs}
    if unknown: raise SystemExit(f"--machine names calls that were not given: {', '.join(sorted(unknown))}")
    s = summarize(docs, machine)
    (out/'results.json').write_text(json.dumps(dict(s, calls=docs), indent=1) + '\n')
    L = ['# Benchmark results (generated)', '', 'Written by `python bench/bench.py report ... --out bench` from the calls\' JSON alone '
         f'(`bench/raw/`; a number a call did not write there reads "{NOT_RECORDED}"); `results.json` holds every number.'
         ' How the numbers were made: `bench/README.md`; what each call was: `bench/raw/HISTORY.md`.', '',
         '## Headline', '', f"From calls {', '.join(s['calls'])} (one machine, {', '.join(s['gpu'])}).", '']
    if s['same_work_pairs']:
        L += ['| Scope | Size | Samples / scored | Reference s | Project s | Speedup | Project call | Reference call |', '|---|---|---|---:|---:|---:|---|---|']
        ratio = lambda p: f"{p['speedup']}×" if p['speedup'] is not None else f"pass of `{p['scores_from']}`"
        L += [f"| {p['scope']} | {p['size']} | {p['samples']} / {p['score_samples']} | {p['reference_s']} | {p['project_s']} | {ratio(p)} | "
              f"{p['project_call']} | {p['reference_call']} |" for p in s['same_work_pairs']]
        L += ['', 'A project run that took another run\'s pass (nested subset, LM-only) did not calibrate or score: its time is a '
              're-solve, so only the whole suite compares (`suite_speedup`).', '']
    L += ['```json', json.dumps({k: v for k, v in s.items() if k not in ('same_work_pairs',)}, indent=1), '```', '']
    head = [d for d in docs if not machine or d['name'] in machine]
    for d in head: L += _call_section(d)
    rest = [d for d in docs if machine and d['name'] not in machine]
    if rest:
        L += ['# Other calls', '', 'Calls on other machines, or of earlier code (bench/README.md says which); compare numbers only within a call.', '']
        for d in rest: L += ['#' + x if x.startswith('#') else x for x in _call_section(d)]
    (out/'RESULTS.md').write_text('\n'.join(L))
    return s

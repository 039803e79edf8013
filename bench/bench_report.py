"""Turn the JSON (and logs) of `bench.py run` calls into bench/RESULTS.md and bench/results.json.

    python bench/bench.py report bench/raw/*.json --out bench

A call's log fills what its JSON lacks: the one-time compile of ModelOpt's CUDA extension ("Loaded extension
modelopt_cuda_ext in X seconds", printed inside the first run when the call did not time it apart) and reference
runs of a call cut off before it saved them ("reference <scope> <size>: ...").
"""
import json, re
from pathlib import Path

REF_LINE = re.compile(r'^reference (\S+)\s+(\S+)\s*:\s+([\d.]+)s \(load ([\d.]+), autoquant ([\d.]+)\) peak ([\d.]+)')

def _from_log(doc: dict, log: Path) -> dict:
    if not log.is_file(): return doc
    text = log.read_text()
    m = re.search(r'Loaded extension modelopt_cuda_ext in ([\d.]+) seconds', text)
    if m and not doc.get('cuda_ext_s'): doc['compile_in_first_run_s'] = float(m.group(1))
    have = {(r['scope'], r['size']) for r in doc.get('reference') or []}
    for line in text.splitlines():
        r = REF_LINE.match(line)
        if r and (r.group(1), r.group(2)) not in have:
            doc.setdefault('reference', []).append(dict(kind='reference', scope=r.group(1), size=r.group(2), wall_s=float(r.group(3)),
                                                        load=float(r.group(4)), autoquant=float(r.group(5)), peak_gib=float(r.group(6)),
                                                        samples=128 if r.group(2) == 'medium' else None, score_samples=128,
                                                        encode=None, reports=None, source='log'))
    return doc

def _proj(doc):
    return {(r['scope'], r['size']): r for r in doc.get('project') or [] if r.get('kind') == 'project'}

def _load(doc):
    return next((r['wall_s'] for r in doc.get('project') or [] if r.get('kind') == 'project-load'), 0.0)

def same_work_pairs(docs: list) -> list:
    """Reference runs against the project's run of the same scope and size in the same call (same GPU, same DB,
    same scoring count). The project's model load is shared out over its runs; the one-time compile of ModelOpt's
    CUDA extension, paid by the first project run of a call, is taken out of that run (the reference processes of
    the call found it compiled already) and reported beside."""
    out = []
    for d in docs:
        proj, runs = _proj(d), [r for r in d.get('project') or [] if r.get('kind') == 'project']
        for r in d.get('reference') or []:
            p = proj.get((r['scope'], r['size']))
            if p is None: continue
            first = runs and p is runs[0]
            compile_s = d.get('compile_in_first_run_s', 0.0) if first else 0.0
            ps = p['wall_s'] - compile_s + _load(d)/len(runs)
            out.append(dict(gpu=d.get('gpu'), call=d.get('name'), scope=r['scope'], size=r['size'], reference_s=r['wall_s'],
                            project_s=round(ps, 1), compile_excluded_s=compile_s, speedup=round(r['wall_s']/ps, 2)))
    return out

def summarize(docs: list) -> dict:
    "The headline numbers (the keys bench/results.json promises)."
    suite = next((d for d in docs if d.get('project_suite_s') and len(_proj(d)) == 6), None)
    pairs = same_work_pairs(docs)
    two = next((d['two_gpu'] for d in docs if d.get('two_gpu')), None)
    hc = next((d['handle_check'] for d in docs if d.get('handle_check')), None)
    floor = (suite or {}).get('scoring_floor') or {}
    ref_s, proj_s = sum(p['reference_s'] for p in pairs), sum(p['project_s'] for p in pairs)
    comp = max((d.get('compile_in_first_run_s') or d.get('cuda_ext_s') or 0) for d in docs)
    return dict(gpu=sorted({d['gpu'] for d in docs if d.get('gpu')}), suite_gpu=(suite or {}).get('gpu'),
                suite_s=(suite or {}).get('project_suite_s'), suite_compile_s=(suite or {}).get('compile_in_first_run_s'),
                reference_suite_s=None, reference_same_work_s=round(ref_s, 1) if pairs else None,
                project_same_work_s=round(proj_s, 1) if pairs else None,
                suite_speedup=round(ref_s/proj_s, 2) if pairs else None,
                suite_speedup_with_one_compile=round(ref_s/(proj_s + comp), 2) if pairs else None,
                same_work_pairs=pairs, scoring_floor_ratio=floor.get('ratio'), scoring_floor=floor,
                peak_gib=max((r.get('peak_gib') or 0) for r in _proj(suite).values()) if suite else None,
                handles=hc, two_gpu_spearman=(two or {}).get('spearman'), two_gpu=two)

def write_report(docs: list, out: Path, names: list | None = None, logs: list | None = None):
    for i, d in enumerate(docs):
        d['name'] = (names or [])[i] if names else f'call{i+1}'
        if logs: _from_log(d, logs[i])
    s = summarize(docs)
    (out/'results.json').write_text(json.dumps(dict(s, calls=docs), indent=1) + '\n')
    L = ['# Benchmark results (generated)', '', 'Written by `python bench/bench.py report bench/raw/*.json --out bench` from the calls\' JSON and logs '
         '(`bench/raw/`); `results.json` holds every number. How the numbers were made: `bench/README.md`.', '']
    for d in docs:
        L += [f"## {d['name']}: {', '.join(d['steps'])} — {d.get('gpu')} ×{d.get('count')}, {d['date']}", '',
              f"Versions: {', '.join(f'{k} {v}' for k, v in d['versions'].items())}. Shape {d['shape']}, batch size {d['batch_size']}, "
              f"measured bf16 matmul {d.get('bf16_tflops') or '—'} TFLOP/s. Set-up: checkpoint {d['setup']['checkpoint_s']} s, data {d['setup']['data_s']} s."
              + (f" ModelOpt's CUDA extension compiled inside the first run: {d['compile_in_first_run_s']} s." if d.get('compile_in_first_run_s') else ''), '']
        if d.get('handle_check'): L += [f"Recipe handles at this shape: {d['handle_check']}", '']
        for key, title in (('project', 'Project runs (one model load, a fresh copy per run)'), ('validation', 'Project runs with ground truth (top 20 + 20 random handles, 32 held-out samples)')):
            rs = [r for r in d.get(key) or [] if r.get('kind') == 'project']
            if not rs: continue
            L += [f"### {title}", '', '| Scope | Size | Samples | Scored | Wall s | Copy s | Encode s | Calibration s | Scoring s | Search s | Validation s | Reports s | Samples/s | Peak GiB |',
                  '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
            for r in rs:
                L.append(f"| {r['scope']} | {r['size']} | {r['samples']} | {r['score_samples']} | {r['wall_s']} | {r['load_s']} | {r['encode_s']} | "
                         f"{r['calibration_s']} | {r['scoring_s']} | {r['search_s']} | {r.get('validation_s') or '—'} | {r['reports_s']} | "
                         f"{r['samples']/r['wall_s']:.1f} | {r['peak_gib']} |")
            L += ['', f"Model load (once): {_load(dict(project=d.get(key)))} s." + (f" Whole suite: {d['project_suite_s']} s." if key == 'project' and d.get('project_suite_s') else ''), '']
            for r in rs:
                g = r.get('ground_truth')
                if g: L.append(f"- Ground truth {r['scope']} {r['size']}: Spearman(score, KL) {g['kl']['spearman']:.2f} (p {g['kl']['p']:.1e}); "
                               f"vs |Δloss| {g['abs_delta_loss']['spearman']:.2f} (p {g['abs_delta_loss']['p']:.1e}); vs signed Δloss {g['delta_loss']['spearman']:.2f} "
                               f"(p {g['delta_loss']['p']:.1e}); {g['handles']} handles")
            if any(r.get('ground_truth') for r in rs): L.append('')
        if d.get('reference'):
            L += ['### Reference driver (fresh process per run, batch 1, padded to 512, labels = input ids, scoring capped at 128)', '',
                  '| Scope | Size | Scored | Wall s (process) | Load s | AutoQuant s | Peak GiB | Source |', '|---|---|---:|---:|---:|---:|---:|---|']
            for r in d['reference']:
                L.append(f"| {r['scope']} | {r['size']} | {r['score_samples']} | {r['wall_s']} | {r['load']} | {r['autoquant']} | "
                         f"{round(r['peak_gib'], 2) if r.get('peak_gib') else '—'} | {r.get('source', 'json')} |")
            L.append('')
        if d.get('scoring_floor'): L += [f"Scoring FLOP floor ({d['scoring_floor']['run']}): {d['scoring_floor']}", '']
        if d.get('two_gpu'): L += [f"Two-GPU check (all-layers small, `device_map='auto'` over {d['two_gpu']['gpus']} GPUs vs one GPU): {d['two_gpu']}", '']
    L += ['## Headline', '', '```json', json.dumps({k: v for k, v in s.items()}, indent=1), '```', '']
    (out/'RESULTS.md').write_text('\n'.join(L))
    return s

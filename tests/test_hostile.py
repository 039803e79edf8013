"""Hostile and odd inputs, generated here (no binary fixtures): one case per kind of input that broke the tool before
(issue 13) and per CLI command. Failing cases assert exit status 2, one `error:` line naming the culprit, no traceback
and nothing left behind; valid-but-odd inputs assert a correct result."""
import json, os, shutil, signal, sqlite3, subprocess, sys
from pathlib import Path
import pytest
from PIL import Image
from conftest import BIN

ODD = 'odd #1 ?x=%41 {y} é "q" \'s'       # breaks file: URIs, str.format, shell quoting, ASCII-only code


def cli(*args, check=None, env=None, prelude=None, timeout=900):
    "Run `qvl-nbsens`; `prelude` is Python run first in the same process (to patch a step, as fault injection)."
    cmd = [str(BIN/'qvl-nbsens')] if prelude is None else \
          [sys.executable, '-c', f"import os, signal, sys\n{prelude}\nfrom qvl_nbsens.cli import main\nsys.exit(main())"]
    r = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check is not None: assert r.returncode == check, f"rc={r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def refused(r, *culprits):
    "Exit 2, one `error:` line naming every culprit, no traceback."
    assert r.returncode == 2, f"rc={r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    errors = [l for l in r.stderr.splitlines() if ': error: ' in l]
    assert len(errors) == 1 and 'Traceback' not in r.stderr, r.stderr
    for c in culprits: assert c in errors[0], (c, errors[0])
    return errors[0]


def everything(*dirs) -> list[str]:
    "Every path (hidden ones too) under `dirs`, for 'nothing left behind' checks."
    return sorted(str(p) for d in dirs if Path(d).exists() for p in Path(d).rglob('*'))


def warnings_of(r) -> list[str]:
    return [l for l in r.stderr.splitlines() if ': warning: ' in l]


def manifest(run_dir: Path):
    from qvl_nbsens.manifest import read_manifest
    return read_manifest(next(Path(run_dir).glob('*_quant_manifest.json')))


KILL_AT_SCORING = "import qvl_nbsens.scoring as s; s.ScoreRecorder.begin_batch = lambda self, b: os.kill(os.getpid(), signal.SIGKILL)"
KILL_AFTER_SEARCH = "import qvl_nbsens.autoquant as a; a.restore_eval = lambda model: os.kill(os.getpid(), signal.SIGKILL)"
RUN = 'tiny_shapes_autoquant_all_layers_int8_small'


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    "A 16 + 4 image COCO tree: exactly what `small` and a 4-sample held-out set need."
    from qvl_nbsens.coco import synth_coco
    return synth_coco(tmp_path_factory.mktemp('h')/'coco', n_train=16, n_val=4, size=(96, 72))


@pytest.fixture(scope='module')
def calib(coco, tmp_path_factory):
    out = tmp_path_factory.mktemp('h')/'calib'
    cli('calib', '--coco-root', coco, '--out', out, '--sizes', 'small', check=0)
    return out


def tree_copy(coco, tmp_path) -> Path:
    dst = tmp_path/'coco'; shutil.copytree(coco, dst)
    return dst


def edit_captions(root: Path, edit, split='train2017'):
    ann = root/'annotations'/f'captions_{split}.json'
    doc = json.loads(ann.read_text()); edit(doc); ann.write_text(json.dumps(doc))


def small_db_copy(calib, tmp_path) -> Path:
    "A copy of the calibration folder (its meta's relative COCO root no longer resolves from there: pass --coco-root)."
    dst = tmp_path/'calib'; shutil.copytree(calib, dst)
    return dst


# --- 1. images the processor cannot take -------------------------------------------------------------------------

def test_calib_refuses_image_over_the_processor_aspect_ratio(coco, tmp_path):
    root = tree_copy(coco, tmp_path)
    victim = sorted((root/'train2017').iterdir())[5]
    Image.new('RGB', (1000, 4), (90, 90, 90)).save(victim)
    refused(cli('calib', '--coco-root', root, '--out', tmp_path/'out', '--sizes', 'small'), victim.name, 'aspect ratio 250:1')
    assert everything(tmp_path/'out') == []


@pytest.mark.parametrize('damage, expect', [
    (lambda p: Image.new('RGB', (4, 1000)).save(p), 'the processor refused its image (ValueError: absolute aspect ratio'),
    (lambda p: p.write_bytes(p.read_bytes()[:150]), 'is corrupt or not an image'),
])
def test_run_names_the_sample_whose_image_fails(coco, tmp_path, damage, expect):
    "An image that changed after `calib` (or a DB from another tool) fails at encoding, naming the sample and file."
    root = tree_copy(coco, tmp_path)
    cli('calib', '--coco-root', root, '--out', tmp_path/'calib', '--sizes', 'small', check=0)
    from qvl_nbsens.coco import load_calib_db
    s3 = load_calib_db(tmp_path/'calib'/'coco2017_vlm_calib_small.db').samples[3]
    damage(root/s3.image_relpath)
    r = cli('run', '--calib-dir', tmp_path/'calib', '--out', tmp_path/'out', '--no-validate')
    refused(r, 'sample 3', s3.image_relpath, expect)
    assert everything(tmp_path/'out') == []            # no hidden partial folder


# --- 2. ambiguous or unusable COCO annotations -------------------------------------------------------------------

def test_duplicate_image_id_with_another_file_is_refused(coco, tmp_path):
    root = tree_copy(coco, tmp_path)
    edit_captions(root, lambda d: d['images'].append(dict(d['images'][2], file_name='other.jpg')))
    first = json.loads((root/'annotations'/'captions_train2017.json').read_text())['images'][2]
    refused(cli('calib', '--coco-root', root, '--out', tmp_path/'out', '--sizes', 'small'),
            f"image id {first['id']} is listed twice", first['file_name'], 'other.jpg')
    assert everything(tmp_path/'out') == []


def test_unusable_annotations_are_skipped_with_one_counted_warning(coco, tmp_path):
    root = tree_copy(coco, tmp_path)
    Image.new('RGB', (64, 48), (1, 2, 3)).save(root/'train2017'/'uncaptioned.jpg')
    def edit(d):
        d['images'].append(dict(id=9001, file_name='uncaptioned.jpg', width=64, height=48))
        d['annotations'] += [dict(id=77001, image_id=424242, caption='a caption whose picture was removed'),
                             dict(d['annotations'][0], caption='a repeated annotation id')]
    edit_captions(root, edit)
    r = cli('calib', '--coco-root', root, '--out', tmp_path/'out', '--sizes', 'small', check=0)
    w = warnings_of(r)
    assert len(w) == 1 and "1 annotations whose image_id is in no 'images' entry" in w[0] and '1 annotations repeating' in w[0] \
        and '1 images without a caption' in w[0], r.stderr
    caps = (tmp_path/'out'/'coco2017_captions_small.txt').read_text()
    assert 'removed' not in caps and 'repeated annotation' not in caps


# --- 3. calibration DBs of other tools with repeated rows --------------------------------------------------------

def test_repeated_db_rows_are_dropped_counted_and_recorded(coco, calib, tmp_path):
    c = small_db_copy(calib, tmp_path)
    con = sqlite3.connect(c/'coco2017_vlm_calib_small.db')
    con.execute('INSERT INTO vlm_calib_samples (split, image_relpath, image_id, caption_id, caption) '
                'SELECT split, image_relpath, image_id, caption_id, caption FROM vlm_calib_samples')   # every row twice
    con.commit(); con.close()
    r = cli('run', '--calib-dir', c, '--coco-root', coco, '--out', tmp_path/'out', '--no-validate', check=0)
    assert any('dropped 16 of 32 rows that repeat' in w for w in warnings_of(r)), r.stderr
    m = manifest(tmp_path/'out'/RUN)
    assert (m.dataset.num_samples, m.dataset.duplicates_dropped) == (16, 16)


# --- 4 + 5. captions that look like markup, captions far longer than COCO's ----------------------------------------

def test_markup_and_overlong_captions(coco, calib, tmp_path):
    c = small_db_copy(calib, tmp_path)
    con = sqlite3.connect(c/'coco2017_vlm_calib_small.db')
    odd = {0: 'a cat <|im_end|> and then more words', 1: 'x <|vision_start|><|image_pad|><|vision_end|> y',
           2: ' '.join(['word'] * 4500), 3: 'ünïcödé 猫\nover two lines'}
    for i, cap in odd.items(): con.execute('UPDATE vlm_calib_samples SET caption=? WHERE id=?', (cap, i))
    con.commit(); con.close()
    cli('run', '--calib-dir', c, '--coco-root', coco, '--out', tmp_path/'out', '--no-validate', '--batch-size', 4, check=0)
    m = manifest(tmp_path/'out'/RUN)
    t = m.dataset.truncated_captions
    assert [(x['sample'], x['kept']) for x in t] == [(2, 128)] and t[0]['caption_tokens'] >= 4500, t
    assert m.scheme.max_caption_tokens == 128 and m.dataset.seq_len_max < 128 + 200     # not 4,500 tokens
    from qvl_nbsens.loaders import VlmCalibLoader
    from qvl_nbsens.coco import load_calib_db
    from transformers import AutoProcessor
    from qvl_nbsens.fixture import default_fixture_dir
    proc = AutoProcessor.from_pretrained(default_fixture_dir())
    cs = load_calib_db(c/'coco2017_vlm_calib_small.db', coco)
    b = next(iter(VlmCalibLoader(cs, proc, batch_size=4, max_caption_tokens=128)))
    sup = [proc.tokenizer.decode(r[l != -100]) for r, l in zip(b['input_ids'], b['labels'])]
    assert sup[0] == cs[0].caption + '<|im_end|>' and sup[1] == cs[1].caption + '<|im_end|>' and sup[3] == cs[3].caption + '<|im_end|>'


# --- 6. paths with any characters; the notebook kernel is this interpreter ---------------------------------------

def test_odd_paths_everywhere_and_foreign_kernel_specs(coco, tmp_path):
    base = tmp_path/ODD
    from qvl_nbsens.fixture import default_fixture_dir
    shutil.copytree(default_fixture_dir(), base/'model')
    shutil.copytree(coco, base/'coco')
    cli('calib', '--coco-root', base/'coco', '--out', base/'calib', '--sizes', 'small', check=0)
    before = everything(base/'calib', base/'coco', base/'model')
    cli('run', '--model-dir', base/'model', '--calib-dir', base/'calib', '--out', base/'out', '--no-validate', check=0)
    assert manifest(base/'out'/RUN).dataset.num_samples == 16
    # a Jupyter set-up whose 'python3' kernel is some other interpreter: the suite must not use it
    ks = tmp_path/'jupyter'/'kernels'/'python3'; ks.mkdir(parents=True)
    (ks/'kernel.json').write_text(json.dumps(dict(argv=['/nonexistent/python', '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
                                                  display_name='foreign', language='python')))
    cli('suite', '--model-dir', base/'model', '--calib-dir', base/'calib', '--out', base/'suite', '--sizes', 'small',
        '--scopes', 'lm-only', '--no-validate', env=dict(JUPYTER_PATH=str(tmp_path/'jupyter')), check=0)
    nb = json.loads((base/'suite'/'tiny_shapes_autoquant_int8_lm_small'/'run.ipynb').read_text())
    assert nb['cells'] and manifest(base/'suite'/'tiny_shapes_autoquant_int8_lm_small').scheme.scope == 'lm-only'
    assert everything(base/'calib', base/'coco', base/'model') == before      # no stray file beside any input
    assert sorted(p.name for p in base.iterdir()) == ['calib', 'coco', 'model', 'out', 'suite']


# --- 7. resume against changed inputs; 8. post-search options reuse the search -----------------------------------

def test_resume_is_refused_when_the_calibration_changed(coco, tmp_path):
    cli('calib', '--coco-root', coco, '--out', tmp_path/'calib', '--sizes', 'small', check=0)
    r = cli('run', '--calib-dir', tmp_path/'calib', '--out', tmp_path/'out', '--no-validate', prelude=KILL_AT_SCORING)
    assert r.returncode == -signal.SIGKILL and (tmp_path/'out'/f'.{RUN}.partial').is_dir()
    cli('calib', '--coco-root', coco, '--out', tmp_path/'calib', '--sizes', 'small', '--seed', 1, '--force', check=0)
    refused(cli('run', '--calib-dir', tmp_path/'calib', '--out', tmp_path/'out', '--no-validate'),
            'partial run made with other inputs', 'the calibration DB', '--force')
    cli('run', '--calib-dir', tmp_path/'calib', '--out', tmp_path/'out', '--no-validate', '--force', check=0)
    m = manifest(tmp_path/'out'/RUN)
    assert not m.search.calibration_restored and m.dataset.meta['random_seed'] == '1'


def test_changing_only_validation_reuses_the_finished_search(calib, coco, tmp_path):
    r = cli('run', '--calib-dir', calib, '--coco-root', coco, '--out', tmp_path, '--validate', '--heldout-size', 4, prelude=KILL_AFTER_SEARCH)
    assert r.returncode == -signal.SIGKILL
    cli('run', '--calib-dir', calib, '--coco-root', coco, '--out', tmp_path, '--no-validate', check=0)
    m = manifest(tmp_path/RUN)
    assert m.search.scores_restored and m.validation is None and m.forward_calls['scoring'] == 0


def test_missing_heldout_is_found_before_the_search(calib, coco, tmp_path):
    c = small_db_copy(calib, tmp_path); (c/'coco2017_vlm_heldout.db').unlink()
    r = cli('run', '--calib-dir', c, '--coco-root', coco, '--out', tmp_path/'out', '--validate')
    refused(r, 'coco2017_vlm_heldout.db')
    assert 'Calibrat' not in r.stdout + r.stderr and everything(tmp_path/'out') == []


# --- 9. a run notebook without its parameters cell -----------------------------------------------------------------

def test_stale_run_notebook_is_refused_before_executing(tmp_path):
    from qvl_nbsens.suite import run_notebook_path
    nb = json.loads(run_notebook_path().read_text())
    for c in nb['cells']: c['metadata'].pop('tags', None)
    stale = tmp_path/'stale.ipynb'; stale.write_text(json.dumps(nb))
    r = cli('suite', '--out', tmp_path/'out', '--sizes', 'small',
            prelude=f"import qvl_nbsens.suite as s; from pathlib import Path; s.run_notebook_path = lambda: Path({str(stale)!r})")
    refused(r, 'stale.ipynb', "0 cells tagged 'parameters'")
    assert not (tmp_path/'out').exists()


# --- 10. manifests of the earlier tool with missing or odd fields ---------------------------------------------------

def _legacy(**over):
    fm = ['INT8_DEFAULT_CFG(effective-bits: 8.0)', 'NONE(effective-bits: 16.0)']
    ls = {f'model.language_model.layers.{i}.mlp.down_proj.quant_recipe': dict(formats=fm, scores=[i * 1e-6, 0.0], costs=[1e6, 2e6],
                                                                                importance=i * 1e-6, rank=i) for i in range(1, 4)}
    doc = dict(scheme=dict(name='qwen3_vl_4b_wint4_afp16_autoquant_lm_medium', auto_quantize_bits=8.0, auto_quantize_method='gradient',
                           coverage_mode='lm_only', quant_formats=['INT4_BLOCKWISE_WEIGHT_ONLY_CFG']),
               num_calib_samples=128, layers={}, layer_sensitivity=ls,
               autoquant_state=dict(keys=['best'], constraints=dict(effective_bits=7.93), score=float('nan'), is_satisfied=True))
    doc.update(over)
    return doc


@pytest.mark.parametrize('doc, ok', [(_legacy(), True), (_legacy(model={'name': 'Qwen3-VL-4B'}), True),
                                     (_legacy(layer_sensitivity={'model.language_model.layers.99999999999999999999.mlp.down_proj.quant_recipe':
                                              dict(formats=['INT8_DEFAULT_CFG(effective-bits: 8.0)', 'NONE(effective-bits: 16.0)'],
                                                   scores=[1e-6, 0.0], costs=[1e6, 2e6])}), True),
                                     (_legacy(layer_sensitivity={}), False)])
def test_legacy_manifests_with_missing_fields(tmp_path, doc, ok):
    p = tmp_path/'x_quant_manifest.json'; p.write_text(json.dumps(doc))   # NaN as the earlier tool wrote it
    r = cli('report', p)
    if not ok:
        refused(r, 'layer_sensitivity is empty'); assert sorted(x.name for x in tmp_path.iterdir()) == [p.name]; return
    assert r.returncode == 0, r.stderr
    md = (tmp_path/'per-layer-sensitivity.md').read_text()
    assert 'wint4_afp16' in md and '7.930 effective bits' in md and '128 samples' in md, md[:1500]
    rep = json.loads((tmp_path/'per-layer-sensitivity.json').read_text(), parse_constant=lambda c: pytest.fail(f'{c} in JSON'))
    assert rep['non_finite'] == {'/autoquant_state/total_score': 'nan'} and rep['autoquant_state']['total_score'] is None


# --- every command: bad input is one line, exit 2, nothing written --------------------------------------------------

@pytest.mark.parametrize('args, culprits', [
    (('fixture', '--out', '{t}/f', '--shape', 'qwen9'), ("unknown fixture shape 'qwen9'",)),
    (('fixture', '--out', '{t}/f', '--dtype', 'int3'), ('--dtype', "'int3'")),
    (('synth-coco', '--out', '{t}/c', '--image-size', '640'), ('--image-size', "'640'")),
    (('synth-coco', '--out', '{t}/c', '--n-train', '-5'), ('--n-train',)),
    (('calib', '--coco-root', '{t}/nope', '--out', '{t}/c'), ('{t}/nope', 'does not exist')),
    (('calib', '--out', '{t}/c', '--sizes', 'huge'), ("'huge'",)),
    (('run', '--model-dir', '{t}/nope', '--out', '{t}/o'), ('{t}/nope',)),
    (('run', '--calib-dir', '{t}', '--out', '{t}/o'), ('no coco2017_vlm_calib_small.db in {t}',)),
    (('run', '--batch-size', '0', '--out', '{t}/o'), ('batch size must be >= 1',)),
    (('run', '--out', '{t}/afile/o'), ('{t}/afile', 'not a folder')),
    (('suite', '--sizes', 'small,small', '--out', '{t}/o'), ('lists a value twice',)),
    (('suite', '--calib-dir', '{t}', '--sizes', 'small', '--out', '{t}/o'), ('no coco2017_vlm_calib_small.db in {t}',)),
    (('validate', '{t}/nope'), ('{t}/nope',)),
    (('report', '{t}/nope.json'), ('{t}/nope.json does not exist',)),
    (('report', '{t}/afile'), ('{t}/afile', 'malformed JSON')),
    (('docs', '--suite', '{t}/nope', '--out', '{t}/site'), ('{t}/nope',)),
])
def test_every_command_refuses_bad_input_in_one_line(tmp_path, args, culprits):
    (tmp_path/'afile').write_text('not json')
    t = str(tmp_path)
    r = cli(*[a.format(t=t) for a in args])
    refused(r, *[c.format(t=t) for c in culprits])
    assert sorted(p.name for p in tmp_path.iterdir()) == ['afile'], everything(tmp_path)


# --- valid but odd: every one gives a correct result ----------------------------------------------------------------

def test_valid_but_odd_images_and_captions(coco, tmp_path):
    root = tree_copy(coco, tmp_path)
    files = sorted((root/'train2017').iterdir())
    Image.open(files[0]).convert('L').save(files[0])                                  # grayscale
    Image.open(files[1]).convert('CMYK').save(files[1])                               # CMYK JPEG
    Image.open(files[2]).convert('RGBA').save(files[2], format='PNG')                 # a PNG behind a .jpg name
    Image.new('RGB', (72, 96), (200, 30, 30)).save(files[3])                          # portrait
    Image.new('RGB', (3, 3), (10, 200, 10)).save(files[4])                            # tiny
    Image.new('RGB', (1, 199), (10, 10, 200)).save(files[5])                          # a strip just within the ratio
    ex = Image.Exif(); ex[0x0112] = 6
    Image.new('RGB', (96, 72), (0, 0, 255)).save(files[6], exif=ex)                   # EXIF-rotated
    def captions(d):       # every caption of the first two images (the subset picks one caption an image)
        ids = [im['id'] for im in d['images'][:2]]
        for a in d['annotations']:
            if a['image_id'] == ids[0]: a['caption'] = 'ünïcödé 猫 — “quoted”\n  on two lines'
            if a['image_id'] == ids[1]: a['caption'] = '\t\ttabs  and   spaces '
    edit_captions(root, captions)
    r = cli('calib', '--coco-root', root, '--out', tmp_path/'calib', '--sizes', 'small', check=0)
    assert warnings_of(r) == [], r.stderr
    caps = (tmp_path/'calib'/'coco2017_captions_small.txt').read_text().splitlines()
    assert len(caps) == 16 and 'tabs and spaces' in caps and 'ünïcödé 猫 — “quoted” on two lines' in caps
    cli('run', '--calib-dir', tmp_path/'calib', '--out', tmp_path/'out', '--no-validate', check=0)
    m = manifest(tmp_path/'out'/RUN)
    assert m.dataset.num_samples == 16 and 'EXIF orientation applied' in m.dataset.image_orientation
    assert all(r.sensitivity == r.sensitivity for r in m.layer_sensitivity.values())
    from qvl_nbsens.coco import open_rgb
    assert open_rgb(files[6]).size == (72, 96)                                        # upright


# --- broken files of every kind a user hands in: one line, exit 2, nothing written ----------------------------------

def _coco_with(coco, t: Path, edit, split='train2017'):
    root = t/'coco'; shutil.copytree(coco, root); edit_captions(root, edit, split)
    return root


def _model_with(t: Path, name: str, data: bytes):
    from qvl_nbsens.fixture import default_fixture_dir
    m = t/'model'; shutil.copytree(default_fixture_dir(), m); (m/name).write_bytes(data)
    return m


def _manifest_without_db(t: Path):
    from qvl_nbsens.manifest import Manifest, Scheme, ModelInfo, StateFile, handle_records, write_manifest
    rows = handle_records({'lm_head.quant_recipe': dict(formats=['INT8_DEFAULT_CFG(effective-bits: 8.0)', 'NONE(effective-bits: 16.0)'],
                                                         scores=[1e-6, 0.0], costs=[1e6, 2e6], module_names=['lm_head'])})
    rd = t/'r'; rd.mkdir(); (rd/'s.pt').write_bytes(b'')
    write_manifest(Manifest(scheme=Scheme(name='r'), model=ModelInfo(id='m', path=str(t)), autoquant_state=StateFile(file='s.pt'),
                            layer_sensitivity=rows), rd/'r_quant_manifest.json')
    return rd


BROKEN = {
    'coco id over 64 bits': (lambda c, t: ['calib', '--coco-root', _coco_with(c, t, lambda d: d['annotations'][0].update(id=2**64)),
                                            '--out', t/'out', '--sizes', 'small'], ['captions_train2017.json', 'at /annotations/0/id is too large']),
    'lone surrogate in a val caption': (lambda c, t: ['calib', '--coco-root', _coco_with(c, t, lambda d: d['annotations'][0].update(caption='a \ud800 b'), 'val2017'),
                                                       '--out', t/'out', '--sizes', 'small'], ['captions_val2017.json', 'not valid Unicode']),
    'deeply nested captions file': (lambda c, t: ['calib', '--coco-root', (lambda r: ((r/'annotations'/'captions_train2017.json').write_text('[' * 100000 + ']' * 100000), r)[1])(
                                                     Path(shutil.copytree(c, t/'coco'))), '--out', t/'out'], ['captions_train2017.json', 'nested too deeply']),
    'deeply nested manifest': (lambda c, t: ['report', (lambda p: (p.write_text('[' * 100000 + ']' * 100000), p)[1])(t/'x_quant_manifest.json')],
                               ['x_quant_manifest.json', 'nested too deeply']),
    'config.json a list': (lambda c, t: ['run', '--model-dir', _model_with(t, 'config.json', b'[]'), '--out', t/'out'], ['config.json', 'must be a JSON object']),
    'config.json not UTF-8': (lambda c, t: ['run', '--model-dir', _model_with(t, 'config.json', b'{"model_type": "qwen3_vl\xe9"}'), '--out', t/'out'],
                              ['config.json', 'not UTF-8']),
    'broken fixture marker': (lambda c, t: ['run', '--model-dir', _model_with(t, 'qvl_nbsens_fixture.json', b'{oops'), '--out', t/'out'],
                              ['qvl_nbsens_fixture.json', 'malformed JSON']),
    'device map unknown': (lambda c, t: ['run', '--device-map', 'bogus', '--out', t/'out'], ["unknown device map 'bogus'"]),
    'GPU fixture without a GPU': (lambda c, t: ['fixture', '--out', t/'f', '--shape', 'qwen3-vl-4b', '--device', 'cuda:0'], ["'cuda:0'", 'no GPU']),
    'newline in a path': (lambda c, t: ['calib', '--coco-root', t/'two\nlines', '--out', t/'out'], ['two\\nlines', 'does not exist']),
    'validate without the DB path': (lambda c, t: ['validate', _manifest_without_db(t)], ['records no calibration DB']),
    'calib into the COCO root': (lambda c, t: ['calib', '--coco-root', shutil.copytree(c, t/'coco'), '--out', t/'coco'], ['is the COCO root']),
    'a split named twice': (lambda c, t: ['calib', '--coco-root', c, '--out', t/'out', '--splits', 'train2017,train2017'], ['splits lists a value twice']),
    'docs into a run of the suite': (lambda c, t: ['docs', '--suite', (t/'s').mkdir() or t/'s', '--out', t/'s'/'run1', '--force'],
                                     ['would replace', 'choose another folder']),
    'DB with unmerged WAL writes': (lambda c, t: ['run', '--calib-dir', _wal_calib(c, t), '--coco-root', c, '--out', t/'out'], ['-wal', 'wal_checkpoint']),
    'report into a file': (lambda c, t: ['report', (lambda p: (p.write_text(json.dumps(_legacy())), p)[1])(t/'x_quant_manifest.json'),
                                          '--out', (lambda f: (f.write_text('x'), f)[1])(t/'afile')], ['afile is a file, not a folder']),
    'cache variable pointing at a file': (lambda c, t: ['calib', '--out', t/'out', '--sizes', 'small'], ['QVL_NBSENS_CACHE', 'writable folder']),
}


def _wal_calib(coco, t: Path) -> Path:
    "A calibration folder whose small DB is in WAL mode with writes not yet merged (a writer still holds it open)."
    subprocess.run([str(BIN/'qvl-nbsens'), 'calib', '--coco-root', str(coco), '--out', str(t/'calib'), '--sizes', 'small'], check=True, capture_output=True)
    db = t/'calib'/'coco2017_vlm_calib_small.db'
    con = sqlite3.connect(db); con.execute('PRAGMA journal_mode=WAL'); con.execute("UPDATE meta SET value='x' WHERE key='size'"); con.commit()
    _wal_calib.keep = con          # left open: the -wal file keeps its frames
    return t/'calib'


@pytest.mark.parametrize('case', list(BROKEN))
def test_broken_files_are_refused_in_one_line(coco, tmp_path, case):
    prep, culprits = BROKEN[case]
    args = prep(coco, tmp_path)
    before = everything(tmp_path)
    env = {'QVL_NBSENS_CACHE': str((tmp_path/'afile', (tmp_path/'afile').write_text('x'))[0])} if case.startswith('cache') else None
    if env: before = everything(tmp_path)
    refused(cli(*args, env=env), *culprits)
    assert everything(tmp_path) == before          # nothing written, nothing left behind


def test_meta_coco_root_stored_as_blob(calib, tmp_path):
    c = tmp_path/'calib'; shutil.copytree(calib, c)
    con = sqlite3.connect(c/'coco2017_vlm_calib_small.db')
    con.execute("UPDATE meta SET value=? WHERE key='coco_root_relative'", (b'../coco',)); con.commit(); con.close()
    refused(cli('run', '--calib-dir', c, '--out', tmp_path/'out'), 'coco_root_relative is not text')
    assert not (tmp_path/'out').exists()

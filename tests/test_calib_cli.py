"The `synth-coco` and `calib` subcommands end to end, and fault injection on bad COCO trees."
import json, shutil, sqlite3, time
from pathlib import Path
import pytest
from conftest import cli, artifacts_dir

SIZES = {'small': 16, 'medium': 128, 'large': 512}


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp('c')/'coco'
    cli('synth-coco', '--out', root, '--n-train', 520, '--n-val', 24, check=0)
    return root


def _leftovers(d: Path):
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_synth_tree_is_official_layout(coco):
    assert sorted(p.name for p in coco.iterdir()) == ['annotations', 'train2017', 'val2017']
    doc = json.loads((coco/'annotations'/'captions_train2017.json').read_text())
    assert {'info', 'licenses', 'images', 'annotations'} <= set(doc)
    assert len(doc['images']) == 520 and len(list((coco/'train2017').glob('*.jpg'))) == 520


def test_calib_builds_nested_subsets(coco, tmp_path):
    t = time.time()
    r = cli('calib', '--coco-root', coco, '--out', tmp_path/'calib', check=0)
    secs = time.time() - t
    (artifacts_dir()/'calib-build-time.txt').write_text(f"calib on synthetic tree (520 train images): {secs:.1f}s wall\n{r.stdout}")
    rows = {}
    for size, n in SIZES.items():
        con = sqlite3.connect(tmp_path/'calib'/f'coco2017_vlm_calib_{size}.db')
        rows[size] = con.execute('SELECT id, split, image_relpath, image_id, caption_id, caption FROM vlm_calib_samples ORDER BY id').fetchall()
        meta = dict(con.execute('SELECT key, value FROM meta'))
        con.close()
        assert len(rows[size]) == n
        assert {'source_dataset', 'coco_root_relative', 'num_samples', 'random_seed'} <= set(meta)
        assert meta['num_samples'] == str(n) and meta['random_seed'] == '0'
        assert (tmp_path/'calib'/meta['coco_root_relative']).resolve() == coco.resolve()
        caps = (tmp_path/'calib'/f'coco2017_captions_{size}.txt').read_text().splitlines()
        assert caps == [r[5] for r in rows[size]]
    assert rows['small'] == rows['medium'][:16] and rows['medium'] == rows['large'][:128]
    assert len({r[3] for r in rows['large']}) == 512  # one caption per image
    assert not [p for p in (tmp_path/'calib').iterdir() if p.name.startswith('.')]


def test_calib_is_seeded(coco, tmp_path):
    cli('calib', '--coco-root', coco, '--out', tmp_path/'a', '--sizes', 'small', check=0)
    cli('calib', '--coco-root', coco, '--out', tmp_path/'b', '--sizes', 'small', check=0)
    cli('calib', '--coco-root', coco, '--out', tmp_path/'c', '--sizes', 'small', '--seed', '1', check=0)
    txt = lambda d: (tmp_path/d/'coco2017_captions_small.txt').read_text()
    assert txt('a') == txt('b') and txt('a') != txt('c')


def test_existing_results_are_not_overwritten(coco, tmp_path):
    cli('calib', '--coco-root', coco, '--out', tmp_path, '--sizes', 'small', check=0)
    before = (tmp_path/'coco2017_vlm_calib_small.db').read_bytes()
    r = cli('calib', '--coco-root', coco, '--out', tmp_path, '--sizes', 'small', '--seed', '3', check=2)
    assert 'already exists' in r.stderr and '--force' in r.stderr
    assert (tmp_path/'coco2017_vlm_calib_small.db').read_bytes() == before
    cli('calib', '--coco-root', coco, '--out', tmp_path, '--sizes', 'small', '--seed', '3', '--force', check=0)


def test_val_only_tree(coco, tmp_path):
    cli('calib', '--coco-root', coco, '--out', tmp_path, '--sizes', 'small', '--splits', 'val2017', check=0)
    con = sqlite3.connect(tmp_path/'coco2017_vlm_calib_small.db')
    assert {r[0] for r in con.execute('SELECT split FROM vlm_calib_samples')} == {'val2017'}


def _broken_copy(coco, tmp_path):
    dst = tmp_path/'coco'
    shutil.copytree(coco, dst)
    return dst


@pytest.mark.parametrize('damage, expect', [
    ('no_root', 'does not exist'),
    ('no_annotations', 'captions_train2017.json is missing'),
    ('malformed_json', 'malformed JSON'),
    ('bad_entry', 'annotations[3]'),
    ('missing_image', 'is missing'),
    ('corrupt_image', 'is corrupt'),
    ('too_few', 'fewer than the 512 needed'),
    ('symlink_out', 'outside'),
])
def test_bad_trees_fail_clearly_and_write_nothing(coco, tmp_path, damage, expect):
    root = _broken_copy(coco, tmp_path)
    ann = root/'annotations'/'captions_train2017.json'
    doc = json.loads(ann.read_text())
    # the first 512 images of the seeded shuffle are the ones checked; damage one of them
    chosen = sorted(p.name for p in (root/'train2017').iterdir())
    if damage == 'no_root': shutil.rmtree(root)
    elif damage == 'no_annotations': ann.unlink()
    elif damage == 'malformed_json': ann.write_text(ann.read_text()[:-10])
    elif damage == 'bad_entry':
        doc['annotations'][3]['caption'] = 42; ann.write_text(json.dumps(doc))
    elif damage in ('missing_image', 'corrupt_image', 'symlink_out'):
        for name in chosen:  # damage every image: whichever is checked first fails
            p = root/'train2017'/name
            if damage == 'missing_image': p.unlink()
            elif damage == 'corrupt_image': p.write_bytes(p.read_bytes()[:200])
            else: p.unlink(); p.symlink_to(coco/'val2017'/sorted(x.name for x in (coco/'val2017').iterdir())[0])
        if damage == 'symlink_out': shutil.rmtree(root/'val2017')  # nothing legit left inside; links point out of root
    elif damage == 'too_few':
        doc['images'] = doc['images'][:100]
        keep = {i['id'] for i in doc['images']}
        doc['annotations'] = [a for a in doc['annotations'] if a['image_id'] in keep]
        ann.write_text(json.dumps(doc))
    out = tmp_path/'calib'
    r = cli('calib', '--coco-root', root, '--out', out, check=2)
    assert expect in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr
    assert _leftovers(out) == [], _leftovers(out)


def test_mixed_image_modes_are_accepted(coco, tmp_path):
    "Grayscale, CMYK and RGBA/palette images are converted to RGB, not rejected."
    from PIL import Image
    root = _broken_copy(coco, tmp_path)
    names = sorted(p.name for p in (root/'train2017').iterdir())
    for mode, name in zip(('L', 'CMYK', 'RGBA', 'P'), names):
        im = Image.open(root/'train2017'/name).convert('RGB').convert(mode)
        if mode in ('RGBA', 'P'): im.save(root/'train2017'/name, format='PNG')  # a PNG behind a .jpg name, as seen in the wild
        else: im.save(root/'train2017'/name)
    cli('calib', '--coco-root', root, '--out', tmp_path/'calib', check=0)
    from qvl_nbsens.coco import load_calib_db
    cs = load_calib_db(tmp_path/'calib'/'coco2017_vlm_calib_large.db')
    by_name = {s.image_relpath.split('/')[-1]: s for s in cs.samples}
    for name in names[:4]:
        if name in by_name: assert by_name[name].image().mode == 'RGB'


def test_default_calib_uses_the_synthetic_tree(tmp_path):
    cli('calib', '--out', tmp_path, '--sizes', 'small,medium', check=0)
    assert (tmp_path/'coco2017_vlm_calib_medium.db').is_file()
    assert not (tmp_path/'coco2017_vlm_calib_large.db').exists()

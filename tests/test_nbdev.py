"Notebook tests, and the check that the committed package and notebooks are what nbdev would produce."
import json, shutil, subprocess, time
from pathlib import Path
from conftest import ROOT, BIN, artifacts_dir


def test_nbdev_test_passes():
    t = time.time()
    r = subprocess.run([str(BIN/'nbdev-test'), '--n-workers', '2', '--timing'], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    (artifacts_dir()/'nbdev-test.log').write_text(f"{time.time()-t:.1f}s\n{r.stdout}\n{r.stderr}")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]


def _snapshot(root: Path):
    files = list((root/'qvl_nbsens').glob('*.py')) + list((root/'nbs').glob('*.ipynb'))
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


def test_export_and_clean_leave_no_diff(tmp_path):
    for name in ('pyproject.toml', 'README.md'): shutil.copy(ROOT/name, tmp_path/name)
    shutil.copytree(ROOT/'nbs', tmp_path/'nbs')
    shutil.copytree(ROOT/'qvl_nbsens', tmp_path/'qvl_nbsens', ignore=shutil.ignore_patterns('__pycache__', 'assets'))
    before = _snapshot(tmp_path)
    for cmd in ('nbdev-export', 'nbdev-clean'):
        r = subprocess.run([str(BIN/cmd)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    after = _snapshot(tmp_path)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"nbdev-export / nbdev-clean would change: {changed}; run them and commit"


def test_readme_and_index_show_the_same_commands():
    nb = json.loads((ROOT/'nbs'/'index.ipynb').read_text())
    index = '\n'.join(''.join(c['source']) for c in nb['cells'])
    readme = (ROOT/'README.md').read_text()
    for cmd in ("python3 -m venv .venv && .venv/bin/pip install torch==2.14.1 torchvision==0.29.1 -e '.[dev]'",
                '.venv/bin/python -m pytest', '.venv/bin/qvl-nbsens suite', '.venv/bin/qvl-nbsens calib', '.venv/bin/qvl-nbsens run', '.venv/bin/jupyter lab nbs/'):
        assert cmd in readme and cmd in index, cmd


def test_notebooks_are_numbered_and_open_with_default_exp():
    for nb_path in sorted((ROOT/'nbs').glob('[0-9]*.ipynb')):
        cells = json.loads(nb_path.read_text())['cells']
        first_code = next(c for c in cells if c['cell_type'] == 'code')
        assert ''.join(first_code['source']).startswith('#| default_exp'), nb_path.name
        assert ''.join(cells[0]['source']).startswith('# '), nb_path.name


def test_packaged_run_notebook_matches_nbs():
    "The run notebook ships inside the package for installs without the repository; it must be the nbs/ one."
    assert (ROOT/'qvl_nbsens'/'assets'/'run_sensitivity.ipynb').read_bytes() == (ROOT/'nbs'/'run_sensitivity.ipynb').read_bytes(), \
        'run qvl_nbsens.suite.sync_generated() (copies nbs/run_sensitivity.ipynb into qvl_nbsens/assets/)'

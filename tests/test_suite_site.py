"The suite through the CLI (papermill per run), papermill failure handling, and the fallback docs site in headless Chromium."
import json, os, re, resource, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import pytest
from conftest import ROOT, cli, artifacts_dir

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
SIX = ['tiny_shapes_autoquant_all_layers_int8_small', 'tiny_shapes_autoquant_all_layers_int8_medium',
       'tiny_shapes_autoquant_all_layers_int8_large', 'tiny_shapes_autoquant_int8_lm_small',
       'tiny_shapes_autoquant_int8_lm_medium', 'tiny_shapes_autoquant_int8_lm_large']


@pytest.fixture(scope='module')
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp('suite')/'layer-analysis'
    t = time.time()
    r = cli('suite', '--out', out, check=0, timeout=1800)
    wall = time.time() - t
    rss = max(json.loads(m.read_text())['timings']['peak_rss_mib'] for m in out.glob('*/*_quant_manifest.json'))
    (artifacts_dir()/'suite-default.txt').write_text(f"qvl-nbsens suite (embedded default, 6 runs): {wall:.1f}s wall, "
                                                      f"largest peak RSS of a run kernel {rss:.0f} MiB\n{r.stdout[-3000:]}")
    return out, r, wall


def test_suite_writes_six_runs_with_notebooks_and_index(suite):
    out, r, wall = suite
    assert wall < 300, f"the default suite took {wall:.0f}s (target: under 5 minutes on 2 cores)"
    assert sorted(p.name for p in out.iterdir()) == sorted(SIX + ['README.md', 'stability.json', 'suite.json'])
    for name in SIX:
        d = out/name
        assert {'run.ipynb', 'report.html', 'per-layer-sensitivity.md', 'per-layer-sensitivity.json', 'per-sample-scores.npz',
                f'{name}_quant_manifest.json', f'{name}_autoquant_state.pt'} == {p.name for p in d.iterdir()}
        nb = json.loads((d/'run.ipynb').read_text())
        outs = [o for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])]
        assert not [o for o in outs if o.get('output_type') == 'error']
        html = ''.join(''.join(o.get('data', {}).get('text/html', '')) for o in outs if 'data' in o)
        assert html.count('Plotly.newPlot') == 6 and '<script src="https://cdn.plot.ly' not in html  # 4 + ground truth + Pareto
        m = json.loads((d/f'{name}_quant_manifest.json').read_text())
        assert m['validation']['correlations']['kl']['spearman'] > 0.5 and len(m['pareto']['validated']) == 3
        assert m['confidence']['parts_sum_max_rel_err'] < 1e-3
    doc = json.loads((out/'suite.json').read_text())
    assert [x['name'] for x in doc['runs']] == SIX
    assert set(doc['stability_spearman']) == {'all-layers/wint8_aint8/gradient', 'lm-only/wint8_aint8/gradient'}
    readme = (out/'README.md').read_text()
    assert all(f'[{n}]({n}/per-layer-sensitivity.md)' in readme for n in SIX) and 'Spearman' in readme
    assert 'suite' in r.stdout and 'total score' in r.stdout  # the closing summary table
    stab = json.loads((out/'stability.json').read_text())
    for scope in ('all-layers/wint8_aint8/gradient', 'lm-only/wint8_aint8/gradient'):
        assert set(stab[scope]) == {'small_vs_medium', 'small_vs_large', 'medium_vs_large'}
        assert all(v['spearman'] > 0.5 and v['kendall'] is not None and v['top10'] is not None for v in stab[scope].values())
    (artifacts_dir()/'suite-README.md').write_text(readme)


def test_rerun_skips_complete_runs(suite):
    out, _, _ = suite
    t = time.time()
    r = cli('suite', '--out', out, check=0)
    assert r.stdout.count(': complete') == 6 or r.stderr.count(': complete') == 6
    assert time.time() - t < 60


def test_failing_notebook_names_the_cell_and_leaves_no_run(tmp_path):
    (tmp_path/'empty').mkdir()
    r = cli('suite', '--out', tmp_path/'out', '--calib-dir', tmp_path/'empty', '--scopes', 'lm-only', '--sizes', 'small', check=2)
    assert 'failed in cell' in r.stderr and 'coco2017_vlm_calib_small.db is missing' in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr
    assert [p.name for p in (tmp_path/'out').iterdir() if not p.name.startswith('.')] == []


def test_suite_takes_paths_relative_to_where_it_starts(tmp_path):
    "The run notebooks execute in another working directory: relative --model-dir and --out still mean the caller's."
    from qvl_nbsens.fixture import default_fixture_dir
    shutil.copytree(default_fixture_dir(), tmp_path/'ckpt')
    cli('suite', '--model-dir', 'ckpt', '--out', 'out', '--scopes', 'lm-only', '--sizes', 'small', '--no-validate', check=0, cwd=tmp_path)
    (m,) = (tmp_path/'out').glob('*/*_quant_manifest.json')
    assert json.loads(m.read_text())['model']['path'] == str(tmp_path/'ckpt')


def _chromium(url, *args):
    flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
             '--disable-component-update', '--disable-sync', '--disable-extensions', f'--user-data-dir={tempfile.mkdtemp(prefix="chromium-")}',
             '--virtual-time-budget=20000', '--window-size=1400,2600']
    return subprocess.run([CHROMIUM, *flags, *args, url], capture_output=True, text=True, timeout=180)


@pytest.fixture(scope='module')
def site(suite, tmp_path_factory):
    out, _, _ = suite
    site = tmp_path_factory.mktemp('site')/'site'
    cli('docs', '--suite', out, '--out', site, check=0, timeout=900)
    size = sum(p.stat().st_size for p in site.rglob('*') if p.is_file())
    (artifacts_dir()/'site-size.txt').write_text(f"{size/2**20:.1f} MiB in {len(list(site.iterdir()))} files\n")
    return site


def test_site_pages_and_navigation(site):
    pages = {p.name for p in site.glob('*.html')}
    assert {'index.html', 'results.html', 'suite.html', 'coco.html', 'autoquant.html'} <= pages
    assert {f'run_{n}.html' for n in SIX} <= pages
    for p in site.glob('*.html'):
        links = set(re.findall(r'<a href="([^"#]+\.html)"', p.read_text()))
        assert links and links <= pages, (p.name, links - pages)


@pytest.mark.skipif(CHROMIUM is None, reason='chromium is not installed (apt-get install chromium)')
@pytest.mark.parametrize('page, min_plots', [('results.html', 2), (f'run_{SIX[0]}.html', 4)])
def test_plots_render_in_headless_chromium(site, page, min_plots):
    url = (site/page).as_uri()
    dom = _chromium(url, '--dump-dom').stdout
    assert dom.count('class="main-svg"') >= min_plots, f"{page}: plotly did not draw ({dom.count('main-svg')} svgs)"
    traces = re.findall(r'class="trace[ "]', dom) + re.findall(r'class="hm"', dom)
    assert len(traces) >= min_plots, f"{page}: no drawn traces"
    shot = artifacts_dir()/f'screenshot-{page.replace(".html", "")}.png'
    _chromium(url, f'--screenshot={shot}')
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_quarto_results_pages_pass_nbdev_processing(suite, tmp_path):
    "The Results pages for `nbdev-docs`, run through nbdev's own docs processor (quarto itself is not installable here)."
    from qvl_nbsens.site import write_quarto_results
    out, _, _ = suite
    proj = tmp_path/'proj'
    shutil.copytree(ROOT/'nbs', proj/'nbs', ignore=shutil.ignore_patterns('results', '.*'))
    shutil.copy(ROOT/'pyproject.toml', proj)
    write_quarto_results(out, proj/'nbs')
    sidebar = (proj/'nbs'/'sidebar.yml').read_text()
    assert all(f'          - results/{n}.ipynb' in sidebar for n in SIX) and 'href: results/index.ipynb' in sidebar
    code = "from nbdev.serve import proc_nbs; proc_nbs(file_re='^(index|tiny_shapes)', n_workers=0)"
    subprocess.run([sys.executable, '-c', code], cwd=proj, check=True, capture_output=True, timeout=300)
    procd = proj/'_proc'/'results'
    assert sorted(p.name for p in procd.iterdir()) == sorted([f'{n}.ipynb' for n in SIX] + ['index.ipynb'])
    page = json.loads((procd/f'{SIX[0]}.ipynb').read_text())
    fm = ''.join(page['cells'][0]['source'])
    assert f'title: {SIX[0]}' in fm and 'skip_exec: true' in fm
    html = ''.join(''.join(o['data']['text/html']) for c in page['cells'] if c['cell_type'] == 'code'
                   for o in c.get('outputs', []) if 'text/html' in o.get('data', {}))
    assert html.count('Plotly.newPlot') >= 4 and '<script src="https://cdn.plot.ly' not in html
    overview = json.dumps(json.loads((procd/'index.ipynb').read_text()))
    assert 'title: Results' in overview and f'({SIX[0]}.ipynb)' in overview and overview.count('Plotly.newPlot') == 2
    from nbdev.test import test_nb
    ok, secs = test_nb(proj/'nbs'/'results'/f'{SIX[0]}.ipynb')
    assert ok and secs == 0  # skip_exec: nbdev-test never re-runs an executed run notebook

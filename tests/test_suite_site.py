"The suite through the CLI (papermill per run), papermill failure handling, and the fallback docs site in headless Chromium."
import http.server, json, os, re, shutil, subprocess, sys, tempfile, threading, time
from html.parser import HTMLParser
from pathlib import Path
import pytest
from conftest import ROOT, cli, artifacts_dir
from qvl_nbsens.manifest import read_manifest

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
    rss = max(read_manifest(m).timings.peak_rss_mib for m in out.glob('*/*_quant_manifest.json'))
    (artifacts_dir()/'suite-default.txt').write_text(f"qvl-nbsens suite (embedded default, 6 runs): {wall:.1f}s wall, "
                                                      f"largest peak RSS of a run kernel {rss:.0f} MiB\n{r.stdout[-3000:]}")
    return out, r, wall


def test_suite_writes_six_runs_with_notebooks_and_index(suite):
    out, r, _ = suite
    assert sorted(p.name for p in out.iterdir()) == sorted(SIX + ['README.md', 'stability.json', 'suite.json'])
    for name in SIX:
        d = out/name
        assert {'run.ipynb', 'report.html', 'per-layer-sensitivity.md', 'per-layer-sensitivity.json', 'per-sample-scores.npz',
                f'{name}_quant_manifest.json', f'{name}_autoquant_state.pt'} == {p.name for p in d.iterdir()} - {'run.stderr.txt', 'nested'}
        # the one pass (all-layers large) keeps what it computed for the smaller subsets, which their runs took
        assert sorted(p.name for p in (d/'nested').iterdir()) == (['medium', 'small'] if name == SIX[2] else []) if (d/'nested').exists() else name != SIX[2]
        nb = json.loads((d/'run.ipynb').read_text())
        outs = [o for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])]
        assert not [o for o in outs if o.get('output_type') == 'error']
        html = ''.join(''.join(o.get('data', {}).get('text/html', '')) for o in outs if 'data' in o)
        assert html.count('Plotly.newPlot') == 6 and '<script src="https://cdn.plot.ly' not in html  # 4 + ground truth + Pareto
        m = read_manifest(d/f'{name}_quant_manifest.json')
        assert m.validation.correlations.kl.spearman > 0.5 and len(m.pareto.validated) == 3
        assert m.confidence.parts_sum_max_rel_err < 1e-3
    doc = json.loads((out/'suite.json').read_text())
    assert [x['run'] for x in doc['runs']] == SIX
    assert set(doc['stability_spearman']) == {'all-layers/wint8_aint8/gradient', 'lm-only/wint8_aint8/gradient'}
    readme = (out/'README.md').read_text()
    assert all(f'[{n}]({n}/per-layer-sensitivity.md)' in readme for n in SIX) and 'Spearman' in readme
    assert 'suite' in r.stdout and 'total score' in r.stdout  # the closing summary table
    stab = json.loads((out/'stability.json').read_text())
    for scope in ('all-layers/wint8_aint8/gradient', 'lm-only/wint8_aint8/gradient'):
        assert set(stab[scope]) == {'small_vs_medium', 'small_vs_large', 'medium_vs_large'}
        assert all(v['spearman'] > 0.5 and v['kendall'] is not None and v['top10'] is not None for v in stab[scope].values())
    (artifacts_dir()/'suite-README.md').write_text(readme)


def test_one_pass_suite_equals_separate_runs(suite, tmp_path):
    "The suite runs one pass (all-layers, large) and takes every other run from it; each of its six runs equals a run that scores on its own."
    from qvl_nbsens.spec import RunSpec
    from qvl_nbsens.run import run_sensitivity
    from qvl_nbsens.confidence import agreement
    out, _, _ = suite
    worst, lines = dict(spearman=1.0, rel=0.0), []
    for name in SIX:
        shared = read_manifest(out/name/f'{name}_quant_manifest.json')
        one_pass = shared.scheme.scope == 'all-layers' and shared.dataset.size == 'large'   # the pass every other run takes
        assert (shared.search.scores_from is None) == one_pass and shared.forward_calls['scoring'] == (0 if shared.search.scores_from else shared.dataset.num_batches)
        assert shared.search.shared_pass == (None if one_pass else 'scope' if shared.scheme.scope == 'lm-only' else 'nested')
        rd = run_sensitivity(RunSpec(scope=shared.scheme.scope, size=shared.dataset.size, shared_passes=False, validate=False), tmp_path, verbose=False)
        own = read_manifest(rd/f'{name}_quant_manifest.json')
        assert own.search.scores_from is None and own.forward_calls['scoring'] > 0
        a, b = ({h: r.sensitivity for h, r in m.layer_sensitivity.items()} for m in (shared, own))
        assert list(a) == list(b)
        rel, rho = max(abs(a[h] - b[h])/abs(b[h]) for h in b), agreement(a, b)['spearman']
        top = lambda s: sorted(s, key=lambda h: -s[h])[:10]
        assert rho >= 0.9999 and rel <= 1e-3 and top(a) == top(b), (name, rho, rel)
        worst = dict(spearman=min(worst['spearman'], rho), rel=max(worst['rel'], rel))
        lines.append(f"{name}: Spearman {rho:.6f}, max relative difference {rel:.2e}")
    (artifacts_dir()/'one-pass-vs-separate.txt').write_text('\n'.join(lines + [f"worst: {worst}"]) + '\n')


def test_rerun_skips_complete_runs(suite):
    out, _, _ = suite
    t = time.time()
    r = cli('suite', '--out', out, check=0)
    (artifacts_dir()/'suite-rerun.txt').write_text(f"qvl-nbsens suite re-run over 6 complete runs: {time.time() - t:.1f}s wall\n")
    assert r.stdout.count(': complete') == 6 or r.stderr.count(': complete') == 6


PROGRESS = re.compile(r'\d+%\|')  # a tqdm progress bar: " 50%|█████     | 1/2 [00:00<00:00, ...]"


@pytest.fixture(scope='module')
def machine_paths(tmp_path_factory):
    "Absolute paths of this machine that a published page must not show: pytest's tmp folder (the suite and site"
    " live there), the project cache, the repo root, $HOME."
    ps = [tmp_path_factory.getbasetemp(), Path(os.environ['QVL_NBSENS_CACHE']), ROOT, Path.home()]
    return sorted({str(q) for p in ps for q in (p, p.resolve()) if len(q.parts) > 1}, key=len, reverse=True)


def _paths_in(text: str, paths: list[str]) -> list[str]:
    "The machine paths `text` mentions (as whole path components: `/root` is not in `/rootfs` nor `x.org/root`)."
    return [p for p in paths if re.search(r'(?<![\w.~-])' + re.escape(p) + r'(?![\w.~-])', text)]


def test_run_notebooks_read_like_reports(suite, machine_paths):
    "Each run's saved notebook reads like a report: no progress-bar spam, no stderr, no paths of the machine that ran it."
    out, _, _ = suite
    for name in SIX:
        nb = json.loads((out/name/'run.ipynb').read_text())
        problems = [f"metadata mentions {ps}" for ps in [_paths_in(json.dumps(nb['metadata']), machine_paths)] if ps]
        for i, c in enumerate(nb['cells']):
            if ps := _paths_in(''.join(c['source']), machine_paths): problems.append(f"cell {i} source mentions {ps}")
            for o in c.get('outputs', []):
                text = ''.join(o.get('text', '')) + ''.join(o.get('data', {}).get('text/plain', ''))
                if o.get('name') == 'stderr': problems.append(f"cell {i} has a stderr stream: {text[:120]!r}")
                if m := PROGRESS.search(text): problems.append(f"cell {i} has a progress bar: {text[max(0, m.start() - 60):m.end() + 40]!r}")
                if ps := _paths_in(json.dumps(o), machine_paths): problems.append(f"cell {i} output mentions {ps}")
        assert not problems, f"{name}/run.ipynb:\n" + '\n'.join(problems)


def test_published_run_files_name_no_machine_path(suite, machine_paths):
    "Every text file of a published run (manifest, reports, report.html, stderr log) shows paths relative to the suite, ~ or the cache."
    out, _, _ = suite
    problems = [f"{f.relative_to(out)} mentions {ps}" for name in SIX for f in sorted((out/name).iterdir())
                if f.suffix in ('.json', '.md', '.html', '.txt', '.ipynb') and (ps := _paths_in(f.read_text(), machine_paths))]
    problems += [f"{f.name} mentions {ps}" for f in (out/'README.md', out/'suite.json', out/'stability.json') if (ps := _paths_in(f.read_text(), machine_paths))]
    assert not problems, '\n'.join(problems)


def test_missing_subset_is_refused_before_any_kernel_starts(tmp_path):
    (tmp_path/'empty').mkdir()
    r = cli('suite', '--out', tmp_path/'out', '--calib-dir', tmp_path/'empty', '--scopes', 'lm-only', '--sizes', 'small', check=2)
    assert 'no coco2017_vlm_calib_small.db in' in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert not (tmp_path/'out').exists()


def test_failing_notebook_names_the_cell_and_leaves_no_run(tmp_path):
    "An input that fails inside the run notebook (an image gone after `calib`): the cell and interpreter are named, nothing is left."
    cli('synth-coco', '--out', tmp_path/'coco', '--n-train', 16, '--n-val', 2, '--image-size', '96x72', check=0)
    cli('calib', '--coco-root', tmp_path/'coco', '--out', tmp_path/'calib', '--sizes', 'small', check=0)
    for f in (tmp_path/'coco'/'train2017').iterdir(): f.unlink()
    r = cli('suite', '--out', tmp_path/'out', '--calib-dir', tmp_path/'calib', '--scopes', 'lm-only', '--sizes', 'small', check=2)
    err = [l for l in r.stderr.splitlines() if ': error: ' in l]
    assert len(err) == 1 and 'is missing' in err[0] and 'run notebook cell' in err[0] and sys.executable in err[0], r.stderr
    assert 'Traceback' not in r.stderr
    assert not (tmp_path/'out').exists()          # the suite created it, did nothing, removed it


def test_suite_takes_paths_relative_to_where_it_starts(tmp_path):
    "The run notebooks execute in another working directory: relative --model-dir and --out still mean the caller's."
    from qvl_nbsens.fixture import default_fixture_dir
    shutil.copytree(default_fixture_dir(), tmp_path/'ckpt')
    cli('suite', '--model-dir', 'ckpt', '--out', 'out', '--scopes', 'lm-only', '--sizes', 'small', '--no-validate', check=0, cwd=tmp_path)
    (m,) = (tmp_path/'out').glob('*/*_quant_manifest.json')
    assert read_manifest(m).model.path == str(tmp_path/'ckpt')


# Chromium with the network off, by two locks that each block on their own: every http(s)/ws request goes to a proxy
# nobody serves (port 9, "discard"), loopback included (`<-loopback>` drops the implicit loopback bypass), and every
# host name or IP literal resolves to nothing; WebRTC may not send UDP around the proxy. file:// pages still load: the
# site is files. `test_chromium_runs_with_the_network_off` proves each lock blocks a script the page asks for.
DEAD_PROXY = ['--proxy-server=127.0.0.1:9', '--proxy-bypass-list=<-loopback>']
NO_HOSTS = ['--host-resolver-rules=MAP * ~NOTFOUND']
NET_OFF = DEAD_PROXY + NO_HOSTS + ['--force-webrtc-ip-handling-policy=disable_non_proxied_udp']


def _chromium(url, *args, net=NET_OFF):
    flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
             '--disable-component-update', '--disable-sync', '--disable-extensions', f'--user-data-dir={tempfile.mkdtemp(prefix="chromium-")}',
             '--virtual-time-budget=20000', '--window-size=1400,2600', *net]
    return subprocess.run([CHROMIUM, *flags, *args, url], capture_output=True, text=True, timeout=180)


def _page_requests(netlog: Path) -> list[str]:
    "URLs that a file:// page asked the network for, from Chromium's net log (its own background requests have no"
    " file:// isolation key)."
    log = json.loads(netlog.read_text())
    start = log['constants']['logEventTypes']['URL_REQUEST_START_JOB']
    return [e['params']['url'] for e in log['events']
            if e['type'] == start and str(e.get('params', {}).get('network_isolation_key', '')).startswith('file://')]


OUTSIDE = re.compile(r'^\s*(?:[a-z][a-z0-9+.-]*:)?//', re.I)  # http://, https://, ws://, file://, protocol-relative //


class _Refs(HTMLParser):
    "What an HTML page would load from outside itself (`loads`), its external hyperlinks (`links`), the text of the"
    " text outputs nbconvert rendered (`outputs`: streams and text/plain, not code) and how many were stderr (`stderr`)."
    LOAD_ATTRS = {'src', 'href', 'xlink:href', 'poster', 'data', 'background'}

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.loads, self.links, self.outputs, self.stderr, self._in, self._out = [], [], [], 0, [], False
        self.feed(page); self.close()

    def _css(self, css: str, where: str):
        for u in re.findall(r'url\(\s*[\'"]?([^\'")]+)|@import\s+[\'"]([^\'"]+)', css):
            u = ''.join(u)
            if OUTSIDE.match(u): self.loads.append((where, u))

    def handle_starttag(self, tag, attrs):
        if tag in ('script', 'style'): self._in.append(tag)
        mime = dict(attrs).get('data-mime-type')
        self.stderr += mime == 'application/vnd.jupyter.stderr'
        self._out = self._out or mime in ('text/plain', 'application/vnd.jupyter.stderr')
        for k, v in attrs:
            if v is None: continue
            if k == 'style': self._css(v, f'<{tag} style>')
            urls = [s.split()[0] for s in v.split(',') if s.split()] if k in ('srcset', 'imagesrcset') else [v]
            if k not in self.LOAD_ATTRS | {'srcset', 'imagesrcset'} or not any(OUTSIDE.match(u) for u in urls): continue
            (self.links if tag in ('a', 'area') and k == 'href' else self.loads).append((f'<{tag} {k}>', v))

    def handle_endtag(self, tag):
        if self._in and self._in[-1] == tag: self._in.pop()
        if tag == 'div': self._out = False  # an output is <div data-mime-type=...><pre>text</pre></div>

    def handle_data(self, data):
        if self._in and self._in[-1] == 'style': self._css(data, '<style>')
        elif self._out and not self._in: self.outputs.append(data)


def test_refs_parser():
    r = _Refs('<html><head><script src="https://cdn.example/require.js"></script><link rel="stylesheet" href="//cdn.example/a.css">'
              '<style>@import "http://x/y.css"; .a{background:url(data:image/png;base64,AA)}</style>'
              '<script>var s = \'<img src="https://in.a/string">\'; // 42%|##</script></head>'
              '<body><img srcset="a.png 1x, https://x/b.png 2x"><a href="https://docs.example/">docs</a><a href="core.html">core</a>'
              '<svg><use href="#i"/><image href="https://x/i.png"/></svg><p style="background:url(\'//x/bg.png\')">50%|#####</p>'
              '<style>[data-mime-type="application/vnd.jupyter.stderr"]{color:red}</style><div data-mime-type="application/vnd.jupyter.stderr">'
              '<pre>warning</pre></div><div class="jp-InputArea"><pre>bar = "10%|#"</pre></div>'
              '<div class="jp-OutputArea-output" data-mime-type="text/plain"><pre>20%|##</pre></div></body></html>')
    assert [w for w, _ in r.loads] == ['<script src>', '<link href>', '<style>', '<img srcset>', '<image href>', '<p style>']
    assert r.links == [('<a href>', 'https://docs.example/')]
    assert PROGRESS.findall(''.join(r.outputs)) == ['20%|'] and r.stderr == 1  # not code, prose, scripts, nor the CSS rule
    assert ''.join(r.outputs) == 'warning20%|##'


@pytest.mark.skipif(CHROMIUM is None, reason='chromium is not installed (apt-get install chromium)')
def test_chromium_runs_with_the_network_off(tmp_path):
    "A page that loads a script from a server on this machine gets it with the network on, and not with either lock"
    " (nor both); the net log shows the attempt."
    hits = []
    class Serve(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path); body = b"document.getElementById('r').textContent = 'loaded';"
            self.send_response(200); self.send_header('Content-Type', 'text/javascript'); self.send_header('Content-Length', str(len(body)))
            self.end_headers(); self.wfile.write(body)
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Serve)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        js = f'http://127.0.0.1:{srv.server_address[1]}/x.js'
        page = tmp_path/'probe.html'
        page.write_text(f"""<!doctype html><html><body><div id="r">pending</div><script src="{js}"
                            onerror="document.getElementById('r').textContent = 'blocked'"></script></body></html>""")
        assert '<div id="r">loaded</div>' in _chromium(page.as_uri(), '--dump-dom', net=[]).stdout and hits == ['/x.js']
        for net in (DEAD_PROXY, NO_HOSTS, NET_OFF):
            hits.clear()
            dom = _chromium(page.as_uri(), '--dump-dom', f'--log-net-log={tmp_path/"net.json"}', net=net).stdout
            assert '<div id="r">blocked</div>' in dom and hits == [], net
            assert _page_requests(tmp_path/'net.json') == [js]  # the net-log check used on the site sees a page's requests
    finally:
        srv.shutdown(); srv.server_close()


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


def test_site_loads_nothing_from_outside(site):
    "No page loads anything from outside the site (scripts, stylesheets, images, frames, CSS urls). Hyperlinks in the"
    " prose to external documentation may stay: following one is the reader's choice, not a load."
    pages = sorted(site.rglob('*.html'))
    assert len(pages) > 20
    loads = {p.name: _Refs(p.read_text()).loads for p in pages}
    assert not {k: v for k, v in loads.items() if v}, {k: v for k, v in loads.items() if v}
    links = sorted({u for p in pages for _, u in _Refs(p.read_text()).links})
    (artifacts_dir()/'site-external-links.txt').write_text(''.join(f'{u}\n' for u in links))


def test_site_pages_read_like_reports(site, machine_paths):
    "No page shows a progress bar or a stderr block among its outputs, nor a path of the machine that built it."
    problems = []
    for p in sorted(site.glob('*.html')):
        page = p.read_text(); refs = _Refs(page); text = ''.join(refs.outputs)
        if m := PROGRESS.search(text): problems.append(f"{p.name}: progress bar {text[max(0, m.start() - 60):m.end() + 20]!r}")
        if refs.stderr: problems.append(f"{p.name}: {refs.stderr} stderr blocks")
        if ps := _paths_in(page, machine_paths): problems.append(f"{p.name}: mentions {ps}")
    assert not problems, '\n'.join(problems)


@pytest.mark.skipif(CHROMIUM is None, reason='chromium is not installed (apt-get install chromium)')
@pytest.mark.parametrize('page, min_plots', [('results.html', 2), (f'run_{SIX[0]}.html', 4)])
def test_plots_render_in_headless_chromium(site, page, min_plots, tmp_path):
    "With the network off, the plots draw and the page asks the network for nothing, before or after its scripts ran."
    url = (site/page).as_uri()
    dom = _chromium(url, '--dump-dom', f'--log-net-log={tmp_path/"net.json"}').stdout
    assert dom.count('class="main-svg"') >= min_plots, f"{page}: plotly did not draw ({dom.count('main-svg')} svgs)"
    traces = re.findall(r'class="trace[ "]', dom) + re.findall(r'class="hm"', dom)
    assert len(traces) >= min_plots, f"{page}: no drawn traces"
    assert _page_requests(tmp_path/'net.json') == [], f"{page} asked the network for something"
    assert _Refs(dom).loads == [], f"{page}: its scripts added loads from outside"
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

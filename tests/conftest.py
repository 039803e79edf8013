import os, subprocess, sys
from pathlib import Path
import pytest

WORKER = os.environ.get('PYTEST_XDIST_WORKER')     # set in each process of `pytest -n N` (pytest-xdist)

# The longest test files first (seconds on two cores, serial run): with `--dist loadfile` each file goes to one worker in
# this order, so the long ones start at once and the short ones fill in around them (longest-first scheduling).
LONGEST_FIRST = ('test_runs.py', 'test_fixture_training.py', 'test_suite_site.py', 'test_bench.py', 'test_hostile.py', 'test_pairs.py',
                 'test_nbdev.py', 'test_memory.py', 'test_fixture.py')


def pytest_collection_modifyitems(config, items):
    if not WORKER: return          # a serial run keeps pytest's order
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda it: rank.get(Path(str(it.fspath)).name, len(rank)))     # stable: order within a file kept

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope='session', autouse=True)
def _cache(tmp_path_factory):
    "Keep the project cache inside the test run unless CI points it somewhere already; a worker of `pytest -n N` its own part of it."
    if 'QVL_NBSENS_CACHE' not in os.environ:
        os.environ['QVL_NBSENS_CACHE'] = str(tmp_path_factory.mktemp('cache'))
    elif WORKER:     # two workers writing the same cached fixture at once would race
        os.environ['QVL_NBSENS_CACHE'] = str(Path(os.environ['QVL_NBSENS_CACHE'])/WORKER)
    yield


def cli(*args, check=None, timeout=900, cwd=None):
    "Run the installed `qvl-nbsens` console command."
    r = subprocess.run([str(BIN/'qvl-nbsens'), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check is not None: assert r.returncode == check, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def artifacts_dir() -> Path:
    "Where tests leave artefacts worth keeping (timings, screenshots)."
    p = ROOT/'test-artifacts'
    p.mkdir(exist_ok=True)
    return p

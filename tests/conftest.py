import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope='session', autouse=True)
def _cache(tmp_path_factory):
    "Keep the project cache inside the test run unless CI points it somewhere already."
    if 'QVL_NBSENS_CACHE' not in os.environ:
        os.environ['QVL_NBSENS_CACHE'] = str(tmp_path_factory.mktemp('cache'))
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

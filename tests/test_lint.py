"The linter is part of the test command: pyflakes rules (ruff) over the package, the tests and the benchmark."
import subprocess
from conftest import ROOT, BIN


def test_ruff_pyflakes_rules_pass():
    r = subprocess.run([str(BIN/'ruff'), 'check', 'qvl_nbsens', 'tests', 'bench'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]

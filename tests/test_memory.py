"""Runs in one process (an interactive kernel, the suite's one kernel) must not keep earlier runs' models alive: on a
GPU each leaked 4B copy holds 8 GiB plus its search state, and the second run of `qvl-nbsens suite` ran out of memory
on an 80 GB H100 before this was fixed. A fresh process per case, since the leak came from the first import of a
library made while a run's frames held the model."""
import json, os, subprocess, sys
import pytest
from conftest import ROOT

PROBE = r'''
import gc, json, sys
from pathlib import Path
from transformers import PreTrainedModel
from qvl_nbsens.spec import RunSpec
from qvl_nbsens.run import run_sensitivity
keep = sys.argv[2] == '1'
def live_models():
    gc.collect()
    return sum(isinstance(o, PreTrainedModel) and type(o).__name__.endswith('ForConditionalGeneration') for o in gc.get_objects())
counts = []
for i, scope in enumerate(['lm-only', 'all-layers']):
    run_sensitivity(RunSpec(scope=scope, size='small', validate=False, device='cpu'), Path(sys.argv[1])/str(i), verbose=False, keep_model=keep)
    counts.append(live_models())
print('LIVE', json.dumps(counts))
'''

@pytest.mark.parametrize('reuse,expected', [('0', [0, 0]), ('1', [1, 1])])   # with reuse, the kept base model alone
def test_runs_leave_no_model_behind(tmp_path, reuse, expected):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, '-c', PROBE, str(tmp_path), reuse], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    (line,) = [l for l in r.stdout.splitlines() if l.startswith('LIVE ')]
    assert json.loads(line[5:]) == expected

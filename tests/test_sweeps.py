"A suite's runs as submitit jobs: the local executor (two concurrent jobs on the CPU) against the serial suite, resuming, and the SLURM executor through submitit's own SLURM test double (no cluster here)."
import json, shutil, time
import pytest
from conftest import cli, artifacts_dir

SWEEP = ('--pairs', 'wint8_aint8,wfp8_afp8', '--sizes', 'small', '--scopes', 'lm-only', '--no-validate', '--device', 'cpu')
GROUPED = ('--pairs', 'wint8_aint8,wfp8_afp8', '--sizes', 'small', '--scopes', 'all-layers,lm-only', '--no-validate', '--device', 'cpu')


def _scores(out):
    from qvl_nbsens.tables import load_suite
    return {r.dir.name: {h: s.sensitivity for h, s in r.manifest.layer_sensitivity.items()} for r in load_suite(out).runs}


def _sources(out):
    "{run: the run whose pass it took (None: its own)}."
    from qvl_nbsens.tables import load_suite
    return {r.dir.name: r.manifest.search.scores_from for r in load_suite(out).runs}


def test_local_executor_gives_the_serial_suites_runs(tmp_path):
    "Two pairs x two scopes: two jobs (one per pair), each running its all-layers run and then the lm-only run that takes its pass."
    t = time.perf_counter(); cli('suite', *GROUPED, '--out', tmp_path/'serial', check=0); serial_s = time.perf_counter() - t
    t = time.perf_counter()
    r = cli('suite', *GROUPED, '--executor', 'local', '--jobs', '2', '--out', tmp_path/'local', check=0)
    local_s = time.perf_counter() - t
    assert '2 local job(s) submitted for 4 run(s)' in r.stdout, r.stdout
    serial, local = _scores(tmp_path/'serial'), _scores(tmp_path/'local')
    assert sorted(serial) == sorted(local) and len(serial) == 4
    for run, sc in serial.items():
        assert sc.keys() == local[run].keys() and len(sc) > 10
        for h, s in sc.items(): assert abs(local[run][h] - s) <= 1e-6*max(abs(s), 1e-30), (run, h, s, local[run][h])
    src = _sources(tmp_path/'local')
    assert src == _sources(tmp_path/'serial') and sorted(v for v in src.values() if v) == sorted(n for n in src if 'all_layers' in n), src   # passes shared within a job
    assert (tmp_path/'local'/'README.md').is_file() and 'executor' not in json.loads((tmp_path/'local'/'suite.json').read_text())['settings']
    again = cli('suite', *GROUPED, '--executor', 'local', '--jobs', '2', '--out', tmp_path/'local', check=0)   # resumes: nothing left
    assert '0 local job(s) submitted' in again.stdout, again.stdout
    (artifacts_dir()/'sweep_local.json').write_text(json.dumps(dict(runs=4, jobs=2, serial_s=round(serial_s, 1), local_s=round(local_s, 1),
                                                                  cores=__import__('os').cpu_count()), indent=2))
    print(f"serial suite {serial_s:.1f}s, local executor with 2 jobs {local_s:.1f}s")


def test_executor_refusals_are_one_line(tmp_path):
    for args, says in ((('--executor', 'local', '--gpus', '0,0'), 'lists a GPU twice'), (('--gpus', '0,1'), '--gpus is for --executor local (it is serial)'),
                       (('--partition', 'gpu'), '--partition is for --executor slurm'), (('--executor', 'slurm', '--jobs', '2'), '--jobs is for --executor local'),
                       (('--executor', 'local', '--gpus', '7'), 'GPU 7 is not visible here'), (('--account', 'x'), '--account is for --executor slurm'),
                       (('--executor', 'slurm', '--mem-gb', '0'), 'mem gb must be >= 1')):
        r = cli('suite', *SWEEP, *args, '--out', tmp_path/'x', check=2)
        assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1 and not (tmp_path/'x').exists(), (args, r.stderr)
    cli('suite', *SWEEP, '--executor', 'pbs', '--out', tmp_path/'x', check=2)


def test_local_jobs_see_one_gpu_each(tmp_path, monkeypatch):
    "`--gpus 1,3` inside an allocation that shows GPUs 4-7: the jobs see physical GPUs 5 and 7, one each."
    from qvl_nbsens.spec import RunSpec, Sweep, SuiteSpec
    from qvl_nbsens.sweeps import executor_for, gpu_ids
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '4,5,6,7')
    assert gpu_ids('1,3') == [5, 7]
    ex = executor_for(SuiteSpec(RunSpec(), Sweep(executor='local', gpus='1,3')), tmp_path, 5)
    assert (ex.parameters['visible_gpus'], ex.parameters['gpus_per_node']) == ((5,), 1)
    assert ex.parameters['timeout_min'] == 525600          # no 2-minute default of submitit's local executor


def test_slurm_executor_submits_one_array_task_per_group(tmp_path):
    from submitit.core import submission
    from submitit.slurm.test_slurm import mocked_slurm
    from qvl_nbsens.fixture import default_fixture_dir
    from qvl_nbsens.spec import RunSpec, Sweep, SuiteSpec
    from qvl_nbsens.suite import execution_order, finish_suite
    from qvl_nbsens.sweeps import submit_jobs, wait_jobs
    from qvl_nbsens.core import QvlError
    model = tmp_path/'model'; shutil.copytree(default_fixture_dir(), model)
    sweep = Sweep(pairs=('wint8_aint8', 'wfp8_afp8'), sizes=('small',), scopes=('lm-only',), executor='slurm', partition='gpu',
                  timeout_min=60, gpus_per_job=1, array_parallelism=1, mem_gb=64, cpus_per_job=8, account='proj-a')
    spec = SuiteSpec(RunSpec(model_dir=str(model), device='cpu', validate=False), sweep)
    with mocked_slurm() as mock:
        out = tmp_path/'suite'; out.mkdir()
        jobs = submit_jobs(spec, execution_order(spec, spec.runs()), out)
        assert [j.job_id for j, _ in jobs] == ['12_0', '12_1'] and [len(rs) for _, rs in jobs] == [1, 1]
        (sub,) = (out/'.jobs').rglob('*_submission.sh')     # one sbatch script for the array
        sbatch = sub.read_text()
        for line in ('#SBATCH --partition=gpu', '#SBATCH --time=60', '#SBATCH --gpus-per-node=1', '#SBATCH --array=0-1%1', '#SBATCH --job-name=qvl-nbsens',
                     '#SBATCH --mem=64GB', '#SBATCH --cpus-per-task=8', '#SBATCH --account=proj-a'):
            assert line in sbatch, (line, sbatch)
        for job, _ in jobs:                               # what SLURM would run on a node, here in this process
            with mock.job_context(job.job_id): submission.process_job(job.paths.folder)
        wait_jobs(jobs, verbose=False)
        finish_suite(out, spec, 1.0, verbose=False)
        assert sorted(_scores(out)) == ['tiny_shapes_autoquant_fp8_lm_small', 'tiny_shapes_autoquant_int8_lm_small']

        out2 = tmp_path/'failing'; out2.mkdir()
        jobs = submit_jobs(spec, execution_order(spec, spec.runs()), out2)
        shutil.rmtree(model)                              # the model folder disappears before the jobs start
        for job, _ in jobs:
            with mock.job_context(job.job_id), pytest.raises(Exception): submission.process_job(job.paths.folder)
        with pytest.raises(QvlError) as e: wait_jobs(jobs, verbose=False)
        msg = str(e.value)
        assert '2 of 2 sweep jobs failed' in msg and 'its log:' in msg and str(jobs[0][0].paths.stderr) in msg and '\n' not in msg, msg

"One declaration of the run settings: the run notebook's parameters, the CLI options and the manifest's scheme all agree with `spec.RunSpec`; no setting travels through the environment."
import json, re
from dataclasses import fields
from conftest import ROOT
from qvl_nbsens.spec import RunSpec, Sweep, SWEPT, NOTEBOOK_PARAMS, VALIDATE_SETTINGS, parameters_cell, spec_options
from qvl_nbsens.cli import build_parser


def _options(cmd: str) -> dict:
    sub = next(a for a in build_parser()._actions if a.dest == 'cmd').choices[cmd]
    return {a.dest: a for a in sub._actions if a.dest != 'help'}


def test_run_notebook_parameters_are_the_spec():
    import papermill as pm
    nb = json.loads((ROOT/'nbs'/'run_sensitivity.ipynb').read_text())
    (cell,) = [c for c in nb['cells'] if 'parameters' in c['metadata'].get('tags', [])]
    assert ''.join(cell['source']) == parameters_cell(), 'run qvl_nbsens.suite.sync_generated() to regenerate the parameters cell'
    params = pm.inspect_notebook(str(ROOT/'nbs'/'run_sensitivity.ipynb'))
    assert list(params) == [f.name for f in fields(RunSpec)] + list(NOTEBOOK_PARAMS)
    assert any('RunSpec(**' in ''.join(c['source']) for c in nb['cells'])   # the notebook builds its spec from its parameters


def test_cli_options_are_the_spec():
    run, suite = _options('run'), _options('suite')
    launch = {'nproc'}      # how many processes start the command (torchrun's engine), not a setting of the run
    assert set(run) == {f.name for f in fields(RunSpec)} | {'out', 'force'} | launch
    assert set(suite) == ({f.name for f in fields(RunSpec)} - set(SWEPT)) | {f.name for f in fields(Sweep)} | {'output_mode', 'out', 'force'} | launch
    validate = _options('validate')
    assert set(validate) == set(VALIDATE_SETTINGS) | {'run_dir', 'force'}
    for name, o in spec_options().items():
        for cmd, opts in (('run', run), ('suite', suite), ('validate', validate)):
            if name not in opts: continue
            assert opts[name].default == o['default'] and opts[name].help.startswith(o['help']), (cmd, name)   # --pair adds the registry's marks
            if o['choices'] and o['type'] is not tuple: assert tuple(opts[name].choices) == o['choices'], (cmd, name)   # a list option checks its values in its type


def test_manifest_scheme_holds_the_result_settings():
    from qvl_nbsens.manifest import Scheme, SCHEME_SETTINGS
    from qvl_nbsens.spec import HOW
    assert set(SCHEME_SETTINGS) <= set(Scheme.model_fields)
    assert not set(HOW) & set(SCHEME_SETTINGS)


def test_no_setting_is_read_from_the_environment():
    "Only the cache folder may come from the environment (QVL_NBSENS_CACHE)."
    for py in sorted((ROOT/'qvl_nbsens').glob('*.py')):
        for var in re.findall(r"QVL_NBSENS_\w+", py.read_text()):
            assert var == 'QVL_NBSENS_CACHE', f"{py.name} reads {var}"


def test_published_manifest_schema_is_current():
    "nbs/manifest.schema.json (published with the docs) is what the manifest types generate."
    from qvl_nbsens.manifest import manifest_schema
    assert json.loads((ROOT/'nbs'/'manifest.schema.json').read_text()) == manifest_schema(), \
        "run qvl_nbsens.suite.sync_generated() to regenerate nbs/manifest.schema.json"


def test_generated_pairs_tables_are_current():
    "The quant-pair and granularity tables in nbs/05_quant.ipynb are the registry's (read only: nothing is rewritten here)."
    from qvl_nbsens.suite import _pairs_tables_cell
    nb = ROOT/'nbs'/'05_quant.ipynb'
    assert _pairs_tables_cell(nb) == nb.read_text(), 'run qvl_nbsens.suite.sync_generated() to regenerate the tables in nbs/05_quant.ipynb'

"Every quant pair of the registry on the embedded fixture: a search each where ModelOpt runs on the CPU, the clear refusal where it does not."
import copy, math
import pytest
from conftest import cli


@pytest.fixture(scope='module')
def fixture_inputs():
    from qvl_nbsens.fixture import default_fixture_dir
    from qvl_nbsens.loading import load_model
    from qvl_nbsens.coco import default_calib_dir, load_calib_db, db_name
    from qvl_nbsens.loaders import VlmCalibLoader
    model, proc = load_model(default_fixture_dir(), 'cpu')
    return model, list(VlmCalibLoader(load_calib_db(default_calib_dir()/db_name('small')), proc, batch_size=4, limit=4))


def test_every_pair_searches_the_fixture_or_is_refused_on_the_cpu(fixture_inputs):
    from qvl_nbsens.core import QvlError
    from qvl_nbsens.quant import QUANT_PAIRS, check_combination, recipe_handles
    from qvl_nbsens.autoquant import run_autoquant
    from qvl_nbsens.modelopt_adapter import restore_search, solve_recipe
    model0, batches = fixture_inputs
    handles, ran, refused = set(recipe_handles(model0)), [], []
    for name, pair in QUANT_PAIRS.items():
        if pair.needs_cuda:
            with pytest.raises(QvlError, match=f'quant pair {name} needs a CUDA GPU'): check_combination(name, device='cpu')
            refused.append(name)
            continue
        res = run_autoquant(copy.deepcopy(model0), batches, check_combination(name), effective_bits=12.0)
        stats = res.state['candidate_stats']
        assert set(stats) == handles, name
        assert {str(f).split('(')[0] for st in stats.values() for f in st['formats']} == {pair.formats[0], 'NONE'}, name
        scores = [x for st in stats.values() for x in st['scores']]
        assert all(math.isfinite(x) and x >= 0 for x in scores) and max(scores) > 0, name
        assert set(solve_recipe(res.state, 12.0)) == handles
        restore_search(copy.deepcopy(model0), res.state)     # a saved state comes back, composed formats by their names
        ran.append(name)
    assert len(ran) == 14
    assert set(refused) == {'wfp4_aint8', 'wfp4_aint4', 'wfp4_afp8', 'wfp4_afp16', 'wfp4_afp4', 'wmxfp8_amxfp8'}


@pytest.mark.parametrize('args, culprit', [
    (('--pair', 'wfp4_afp4', '--device', 'cpu'), 'quant pair wfp4_afp4 needs a CUDA GPU'),
    (('--pair', 'wint8_afp16', '--granularity', 'a_per_token_dynamic'), 'granularity a_per_token_dynamic does not apply to quant pair wint8_afp16'),
    (('--pair', 'wint4_aint8', '--granularity', 'w_per_out_channel'), 'in groups only'),
])
def test_unsupported_combinations_are_refused_up_front(tmp_path, args, culprit):
    r = cli('run', '--out', tmp_path/'out', *args, check=2)
    assert culprit in r.stderr and len(r.stderr.strip().splitlines()) == 1 and 'Traceback' not in r.stderr, r.stderr
    assert not (tmp_path/'out').exists() or not list((tmp_path/'out').iterdir())


def test_suite_refuses_a_gpu_only_pair_before_any_run(tmp_path):
    r = cli('suite', '--out', tmp_path/'out', '--pairs', 'wint8_aint8,wfp4_afp8', '--device', 'cpu', check=2)
    assert 'quant pair wfp4_afp8 needs a CUDA GPU' in r.stderr and not (tmp_path/'out').exists(), r.stderr


def test_pairs_command_lists_the_registry():
    from qvl_nbsens.quant import QUANT_PAIRS
    out = cli('pairs', check=0).stdout
    assert all(f'| `{n}` |' in out for n in QUANT_PAIRS) and 'simulation only' in out and 'w_group128' in out

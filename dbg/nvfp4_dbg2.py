import json, torch
from qvl_nbsens.spec import RunSpec
from qvl_nbsens.run import run_sensitivity
from qvl_nbsens.export import _state, choose_recipe, fake_quant_weights, load_exported, exported_layers
from qvl_nbsens.loading import load_model
from qvl_nbsens.fixture import default_fixture_dir
from qvl_nbsens.modelopt_adapter import restore_search, export_hf
from qvl_nbsens.validate import apply_recipes
rd = run_sensitivity(RunSpec(candidates=('wfp4_afp4', 'wfp8_afp8'), effective_bits=6, validate=False, device='cuda'), '/tmp/dbg-runs2', force=True, verbose=False)
mf, m, state = _state(rd)
rec = choose_recipe(state, 5.0)
rec['model.visual.patch_embed.proj.quant_recipe'] = 'NONE(effective-bits: 16.0)'
model, p = load_model(default_fixture_dir(), 'cuda'); restore_search(model, state); apply_recipes(model, rec)
fq = fake_quant_weights(model, state, rec)
export_hf(model, '/tmp/dbg-ck2')
L = exported_layers('/tmp/dbg-ck2')
_, deq = load_exported('/tmp/dbg-ck2', 'cuda')
rows = []
for k, v in deq.items():
    if v is None or k not in fq: continue
    d = (fq[k] - v[0].cpu()).abs()
    rows.append((float(d.max())/v[1], k, L[k]['quant_algo'], float(d.max()), v[1], float((d > 1e-6*fq[k].abs().max()).float().mean())))
for r in sorted(rows, reverse=True)[:8]: print('ROW', r)
print('MODS', [(k, type(dict(model.named_modules()).get(k)).__name__) for k in [r[1] for r in sorted(rows, reverse=True)[:3]]])

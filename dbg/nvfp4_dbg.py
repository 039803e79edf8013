import json, torch, glob, sys
from qvl_nbsens.spec import RunSpec
from qvl_nbsens.run import run_sensitivity
from qvl_nbsens.export import _state, choose_recipe, fake_quant_weights, load_exported, exported_layers, _tensors
from qvl_nbsens.loading import load_model
from qvl_nbsens.fixture import default_fixture_dir
from qvl_nbsens.modelopt_adapter import restore_search, export_hf, dequantize_weight
from qvl_nbsens.validate import apply_recipes
rd = run_sensitivity(RunSpec(pair='wfp4_afp4', validate=False, device='cuda'), '/tmp/dbg-runs', force=True, verbose=False)
mf, m, state = _state(rd)
rec = choose_recipe(state, 4.0)
model, p = load_model(default_fixture_dir(), 'cuda'); restore_search(model, state); apply_recipes(model, rec)
fq = fake_quant_weights(model, state, rec)
mod = dict(model.named_modules())['model.visual.blocks.1.attn.qkv']
wq = mod.weight_quantizer
print('WQ', wq, getattr(wq, 'block_sizes', None))
export_hf(model, '/tmp/dbg-ck')
L = exported_layers('/tmp/dbg-ck'); t = _tensors('/tmp/dbg-ck')
print('ALGOS', {v['quant_algo'] for v in L.values()}, list(L.items())[:2])
for name in ['model.visual.blocks.1.attn.qkv', 'model.language_model.layers.0.self_attn.q_proj', 'lm_head']:
    if name not in L: continue
    tt = {n: t[f'{name}.{n}'] for n in ('weight', 'weight_scale', 'weight_scale_2') if f'{name}.{n}' in t}
    print(name, {k: (v.dtype, tuple(v.shape)) for k, v in tt.items()}, L[name])
    dq, step = dequantize_weight(L[name]['quant_algo'], tt, L[name].get('group_size'))
    d = (dq.cpu() - fq[name]).abs()
    print('  diff max', float(d.max()), 'step', step, 'frac>0', float((d > 1e-6).float().mean()), 'fq absmax', float(fq[name].abs().max()), 'dq absmax', float(dq.abs().max()))
    i = int(d.argmax()); r, c = divmod(i, d.shape[1])
    print('  at', r, c, float(fq[name][r, c]), float(dq[r, c]), 'w', float(mod.weight.flatten()[0]) if name.endswith('qkv') else '')
    print('  rel fro', float((dq.cpu() - fq[name]).norm() / fq[name].norm()))

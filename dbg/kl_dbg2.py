import json, torch, glob
from dataclasses import replace
from qvl_nbsens.run import spec_of, encode_set
from qvl_nbsens.export import _state, choose_recipe, load_exported, exported_layers, fake_quant_weights
from qvl_nbsens.loading import load_model
from qvl_nbsens.coco import load_heldout
from qvl_nbsens.modelopt_adapter import restore_search, model_quantizers
from qvl_nbsens.validate import apply_recipes, unquantized_reference, caption_damage
rd = glob.glob('/tmp/bw/acc-runs/*')[0]
mf, m, state = _state(rd)
rec = choose_recipe(state, 6.0); rec['model.visual.patch_embed.proj.quant_recipe'] = 'NONE(effective-bits: 16.0)'
spec = replace(spec_of(m, device='cuda', heldout_size=16).resolved(), batch_size=8)
model, p = load_model(spec.model_dir, 'cuda'); restore_search(model, state)
b = encode_set(spec, load_heldout(spec.calib_dir, 16, spec.coco_root), p, model)
ref, base = unquantized_reference(model, b)
apply_recipes(model, rec)
fq = fake_quant_weights(model, state, rec)
en = [(n, type(mod).__name__) for n, mod in model.named_modules() if type(mod).__name__ == 'TensorQuantizer' and mod.is_enabled and not n.endswith(('weight_quantizer', 'input_quantizer'))]
print('OTHERQ', en[:10], len(en))
for n, mod in model.named_modules():
    if type(mod).__name__ == 'TensorQuantizer' and not n.endswith('weight_quantizer') and mod.is_enabled: mod.disable()
print('FQW', caption_damage(model, b, ref)['kl'])
rl, deq = load_exported('/tmp/dbg-ck3', 'cuda')
for mod in rl.modules(): mod._forward_pre_hooks.clear()
base_ex = caption_damage(rl, b, ref)['kl']; print('EXW', base_ex)
mods = dict(rl.named_modules()); rows = []
for k in deq:
    if deq[k] is None or k not in fq: continue
    w = mods[k].weight.data.clone(); mods[k].weight.data.copy_(fq[k].to(w.device, w.dtype))
    rows.append((caption_damage(rl, b, ref)['kl'] - base_ex, k, float((fq[k] - deq[k][0].cpu()).norm()/fq[k].norm())))
    mods[k].weight.data.copy_(w)
for r in sorted(rows, key=lambda r: -abs(r[0]))[:6]: print('SWAP', r)
print('ALGO', {k: v['quant_algo'] for k, v in exported_layers('/tmp/dbg-ck3').items() if k in [r[1] for r in sorted(rows, key=lambda r: -abs(r[0]))[:6]]})

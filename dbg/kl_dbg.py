import json, torch, glob
from dataclasses import replace
from qvl_nbsens.spec import RunSpec
from qvl_nbsens.run import run_sensitivity, spec_of, encode_set
from qvl_nbsens.export import _state, choose_recipe, load_exported, exported_layers
from qvl_nbsens.loading import load_model
from qvl_nbsens.coco import load_heldout
from qvl_nbsens.modelopt_adapter import restore_search, export_hf
from qvl_nbsens.validate import apply_recipes, unquantized_reference, caption_damage
rd = glob.glob('/tmp/bw/acc-runs/*')[0]
mf, m, state = _state(rd)
for bits in (6.0,):
    rec = choose_recipe(state, bits)
    rec['model.visual.patch_embed.proj.quant_recipe'] = 'NONE(effective-bits: 16.0)'
    spec = replace(spec_of(m, device='cuda', heldout_size=16).resolved(), batch_size=8)
    model, p = load_model(spec.model_dir, 'cuda'); restore_search(model, state)
    b = encode_set(spec, load_heldout(spec.calib_dir, 16, spec.coco_root), p, model)
    ref, base = unquantized_reference(model, b)
    apply_recipes(model, rec)
    print('FQ', caption_damage(model, b, ref)['kl'])
    for n, mod in model.named_modules():
        if hasattr(mod, 'input_quantizer') and mod.input_quantizer.is_enabled: mod.input_quantizer.disable()
    print('FQ weights only', caption_damage(model, b, ref)['kl'])
    model, p = load_model(spec.model_dir, 'cuda'); restore_search(model, state); apply_recipes(model, rec)
    export_hf(model, '/tmp/dbg-ck3')
    L = exported_layers('/tmp/dbg-ck3'); print('LAYERS', sorted({v['quant_algo'] for v in L.values()}), [(k, v['quant_algo']) for k, v in L.items() if 'lm_head' in k or 'embed' in k])
    rl, deq = load_exported('/tmp/dbg-ck3', 'cuda')
    print('EX', caption_damage(rl, b, ref)['kl'])
    for mod in rl.modules(): mod._forward_pre_hooks.clear()
    print('EX weights only', caption_damage(rl, b, ref)['kl'])
    hq = json.load(open('/tmp/dbg-ck3/config.json')); print('TIE', hq.get('tie_word_embeddings'), hq.get('text_config', {}).get('tie_word_embeddings'))
    sd = rl.state_dict(); print('EMB==LM', torch.equal(sd['model.language_model.embed_tokens.weight'], sd['lm_head.weight']))

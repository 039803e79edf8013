"Fixture checkpoints through the CLI, loaded in a fresh process by the stock transformers path."
import json, subprocess, sys, textwrap
import torch
from conftest import cli

LOAD = textwrap.dedent('''
    import json, sys, torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    d = sys.argv[1]
    m = AutoModelForImageTextToText.from_pretrained(d)
    p = AutoProcessor.from_pretrained(d)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "a red circle on a black background"}]}]
    text = p.apply_chat_template(msgs, tokenize=False)
    b = p(text=[text], images=[Image.new("RGB", (640, 480), (200, 20, 20))], return_tensors="pt")
    ids = b["input_ids"][0].tolist()
    tok = p.tokenizer
    vs, ve, pad = (tok.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>"))
    n = ids.count(pad)
    with torch.no_grad(): loss = m(**b, labels=b["input_ids"]).loss.item()
    print(json.dumps(dict(cls=type(m).__name__, proc=type(p).__name__, text=text,
        layout_ok=ids[ids.index(vs)+1:ids.index(vs)+1+n] == [pad]*n and ids[ids.index(vs)+1+n] == ve,
        n_pad=n, grid=b["image_grid_thw"][0].tolist(), ids=[vs, ve, pad, m.config.vision_start_token_id,
        m.config.vision_end_token_id, m.config.image_token_id], loss=loss)))
''')


def load_in_fresh_process(d):
    r = subprocess.run([sys.executable, '-c', LOAD, str(d)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_tiny_fixture_loads_with_stock_classes(tmp_path):
    cli('fixture', '--out', tmp_path/'ck', check=0)
    names = {p.name for p in (tmp_path/'ck').iterdir()}
    assert {'config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'vocab.json', 'merges.txt',
            'chat_template.json', 'preprocessor_config.json', 'video_preprocessor_config.json', 'generation_config.json'} <= names
    cfg = json.loads((tmp_path/'ck'/'config.json').read_text())
    assert cfg['model_type'] == 'qwen3_vl' and 'auto_map' not in cfg  # stock classes, no remote code
    res = load_in_fresh_process(tmp_path/'ck')
    assert (res['cls'], res['proc']) == ('Qwen3VLForConditionalGeneration', 'Qwen3VLProcessor')
    assert res['layout_ok'] and res['n_pad'] == res['grid'][0]*res['grid'][1]*res['grid'][2]//4
    assert res['ids'][:3] == res['ids'][3:]
    assert res['text'].startswith('<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n<|im_start|>assistant\n')
    assert res['loss'] == res['loss'] and res['loss'] < 20
    r = cli('fixture', '--out', tmp_path/'ck', check=2)
    assert 'already exists' in r.stderr


def test_4b_shape_counts_and_ids():
    from transformers import Qwen3VLForConditionalGeneration
    from qvl_nbsens.fixture import fixture_config
    cfg = fixture_config('qwen3-vl-4b')
    with torch.device('meta'): m = Qwen3VLForConditionalGeneration(cfg)
    n_vis = sum(p.numel() for p in m.model.visual.parameters())
    n_all = sum(p.numel() for p in m.parameters())  # tied lm_head is counted once
    assert 4.3e9 < n_all < 4.5e9, n_all
    assert 0.38e9 < n_vis < 0.43e9, n_vis
    t, v = cfg.text_config, cfg.vision_config
    assert (t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads,
            t.head_dim, t.vocab_size) == (2560, 9728, 36, 32, 8, 128, 151936)
    assert t.rope_parameters['mrope_section'] == [24, 20, 20] and t.rope_parameters['mrope_interleaved']
    assert t.rope_parameters['rope_theta'] == 5e6 and cfg.tie_word_embeddings
    assert (v.depth, v.hidden_size, v.intermediate_size, v.num_heads, v.patch_size, v.temporal_patch_size,
            v.spatial_merge_size, v.out_hidden_size, v.deepstack_visual_indexes, v.num_position_embeddings) == \
           (24, 1024, 4096, 16, 16, 2, 2, 2560, [5, 11, 17], 2304)
    assert m.lm_head.weight is m.model.language_model.embed_tokens.weight


def test_4b_vocabulary_and_processor_through_stock_loader(tmp_path):
    "The 4B shape's tokenizer/processor files (real vocabulary, patch 16) with slim towers to keep CI light."
    from qvl_nbsens.fixture import FIXTURE_SHAPES, write_checkpoint
    spec = json.loads(json.dumps(FIXTURE_SHAPES['qwen3-vl-4b']))
    spec['text'].update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=1, head_dim=64, rope_parameters=dict(spec['text']['rope_parameters'], mrope_section=[12, 10, 10]))
    spec['vision'].update(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=64,
                          deepstack_visual_indexes=[0, 1])
    write_checkpoint(tmp_path/'slim4b', spec, dtype='float32')
    res = load_in_fresh_process(tmp_path/'slim4b')
    assert res['ids'][:3] == [151652, 151653, 151655] == res['ids'][3:]
    assert res['layout_ok'] and res['grid'] == [1, 30, 40]  # 640x480 at patch 16 (real geometry)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tmp_path/'slim4b')
    assert len(tok) == 151643 + 26
    assert tok.convert_tokens_to_ids(['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|video_pad|>']) == [151643, 151644, 151645, 151656]


def test_training_is_deterministic(tmp_path):
    from qvl_nbsens.fixture import TrainRecipe, train_tiny_shapes
    r = TrainRecipe(n_train=64, batch_size=16, steps=4, eval_n=8)
    s1, rep1 = train_tiny_shapes(r, workdir=tmp_path/'a', verbose=False)
    s2, rep2 = train_tiny_shapes(r, workdir=tmp_path/'b', verbose=False)
    assert rep1['loss_curve'] == rep2['loss_curve']
    assert all(torch.equal(s1[k], s2[k]) for k in s1)

"""The reference: what hand-written AutoQuant drivers commonly do, for the benchmark's comparison.

One process per run (model loaded each time), one sample per batch, every sequence padded to 512 tokens,
labels = input ids (the whole sequence, padding included), scoring capped at 128 samples, stock ModelOpt call.
It reads the project's calibration DB only to get the same images and captions. Writes its timings, scores and chosen
recipe to --out (JSON: timings, scores, best); the bench reads its timings from there.
"""
import argparse, json, time
from pathlib import Path

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--model-dir', required=True); p.add_argument('--db', required=True)
    p.add_argument('--scope', default='all-layers'); p.add_argument('--score-size', type=int, default=128)
    p.add_argument('--pad-to', type=int, default=512); p.add_argument('--device', default='cuda')
    p.add_argument('--out', required=True)
    a = p.parse_args()
    t0 = time.perf_counter()
    import torch
    import modelopt.torch.quantization as mtq
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from qvl_nbsens.coco import load_calib_db
    t_imports = time.perf_counter() - t0
    t = time.perf_counter()
    dtype = torch.bfloat16 if a.device.startswith('cuda') else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(a.model_dir, dtype=dtype).to(a.device).eval()
    proc = AutoProcessor.from_pretrained(a.model_dir)
    if a.device.startswith('cuda'): torch.cuda.synchronize()
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    calib = load_calib_db(a.db)
    data = []
    for s in calib.samples:
        msgs = [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': 'Describe this image in one sentence.'}]},
                {'role': 'assistant', 'content': [{'type': 'text', 'text': s.caption}]}]
        text = proc.apply_chat_template(msgs, tokenize=False)
        b = proc(text=[text], images=[s.image()], padding='max_length', max_length=a.pad_to, return_tensors='pt')
        b['labels'] = b['input_ids'].clone()
        data.append({k: v.to(a.device) for k, v in b.items()})
    t_encode = time.perf_counter() - t
    calls = {'n': 0}
    def forward_step(m, batch):
        calls['n'] += 1
        return m(**batch)
    disabled = ['*visual*'] if a.scope == 'lm-only' else None
    cons = {'effective_bits': 8.0}
    if disabled: cons['cost'] = {'excluded_module_name_patterns': ['*visual*']}
    t = time.perf_counter()
    model, state = mtq.auto_quantize(model, constraints=cons, quantization_formats=[mtq.INT8_DEFAULT_CFG], data_loader=data,
                                     forward_step=forward_step, loss_func=lambda out, batch: out.loss, disabled_layers=disabled,
                                     num_calib_steps=len(data), num_score_steps=min(a.score_size, len(data)), method='gradient')
    if a.device.startswith('cuda'): torch.cuda.synchronize()
    t_aq = time.perf_counter() - t
    t = time.perf_counter()
    scores = {h: [float(x) for x in st['scores']] for h, st in state['candidate_stats'].items()}
    best = {h: str(r) for h, r in state['best']['recipe'].items()}
    t_report = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated()/2**30 if a.device.startswith('cuda') else None
    timings = dict(samples=len(data), score_samples=min(a.score_size, len(data)), imports=round(t_imports, 2), load=round(t_load, 2),
                   encode=round(t_encode, 2), autoquant=round(t_aq, 2), reports=round(t_report, 2), forward_calls=calls['n'], peak_gib=peak)
    Path(a.out).write_text(json.dumps(dict(timings=timings, scores=scores, best=best)))
    print('reference', json.dumps(timings))

if __name__ == '__main__': main()

"""Inference throughput: `ftlab.engine.evaluate` (samples/s, vs a bare inference loop) and SmolLM2
greedy generation (new tokens/s) with and without the KV cache."""
from __future__ import annotations
import time

import torch

from bench.common import median

PROMPTS = ["The movie was", "In a quiet village by the sea,", "My favourite recipe for a rainy day is",
           "The three most important ideas in machine learning are"]


def eval_throughput(spec, n=512, batch_size=64, reps=2, log=print) -> list[dict]:
    "evaluate() on `n` tokenized examples vs a bare sorted-by-length inference_mode loop; median of `reps`."
    from ftlab.engine import Collator, evaluate
    model = spec["model"].eval()
    ds = spec["ds"].select(range(min(n, len(spec["ds"]))))
    cols = ds.select_columns([c for c in ds.column_names if c in ("input_ids", "attention_mask", "token_type_ids", "labels")]).to_dict()
    lengths = [sum(m) for m in cols["attention_mask"]]
    coll = Collator(spec["tok"])
    def bare():
        order = sorted(range(len(ds)), key=lengths.__getitem__); preds = []
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                b = coll({k: [c[i] for i in order[s:s + batch_size]] for k, c in cols.items()})
                preds.append(model(**b).logits.argmax(-1))
        return torch.cat(preds)
    rows = []
    evaluate(model, ds.select(range(64)), tokenizer=spec["tok"], batch_size=batch_size)  # warm-up
    for name, fn in (("evaluate", lambda: evaluate(model, ds, tokenizer=spec["tok"], batch_size=batch_size)), ("bare", bare)):
        ts = []
        for _ in range(reps):
            t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
        rows.append(dict(kind="eval", model=spec["name"], variant=name, n=len(ds), batch_size=batch_size, time_s=median(ts),
                         samples_per_s=len(ds) / median(ts), tokens_per_s=sum(lengths) / median(ts)))
        log(f"  eval {name:<9} {rows[-1]['samples_per_s']:8.1f} samples/s")
    rows[0]["evaluate_over_bare"] = rows[0]["samples_per_s"] / rows[1]["samples_per_s"]
    return rows


def generation_throughput(model, tok, new_tokens=24, prompts=PROMPTS, log=print) -> list[dict]:
    "Greedy generation of exactly `new_tokens` tokens per prompt (batch 1), with and without the KV cache."
    model.eval(); rows = []
    enc = [tok(p, return_tensors="pt") for p in prompts]
    with torch.inference_mode():
        model.generate(**enc[0], max_new_tokens=2, do_sample=False, pad_token_id=tok.pad_token_id)  # warm-up
        outs = {}
        for use_cache in (True, False):
            t = time.perf_counter(); gen = 0; texts = []
            for e in enc:
                o = model.generate(**e, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=use_cache,
                                   pad_token_id=tok.pad_token_id)
                gen += o.shape[1] - e["input_ids"].shape[1]; texts.append(o[0].tolist())
            dt = time.perf_counter() - t; outs[use_cache] = texts
            rows.append(dict(kind="generate", model="smollm2-135m", variant=f"use_cache={use_cache}", n=len(prompts), batch_size=1,
                             new_tokens=gen, time_s=dt, tokens_per_s=gen / dt))
            log(f"  generate use_cache={use_cache!s:<5} {gen / dt:8.1f} new tokens/s")
    rows[0]["same_tokens_as_no_cache"] = outs[True] == outs[False]
    rows[0]["cache_speedup"] = rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"]
    return rows


def batched_generation_throughput(model, tok, new_tokens=24, batch_sizes=(1, 16), precisions=("fp32", "bf16"), log=print) -> list[dict]:
    """Greedy generation with the KV cache of exactly `new_tokens` tokens for 16 prompts (the PROMPTS repeated), in batches
    of each size (left-padded), in fp32 and under bf16 autocast: new tokens/s — the number the RL chapters' budgets rest on."""
    model.eval(); rows = []
    prompts = (PROMPTS * 4)[:16]
    side, tok.padding_side = tok.padding_side, "left"
    try:
        with torch.inference_mode():
            for prec in precisions:
                amp = torch.autocast("cpu", dtype=torch.bfloat16) if prec == "bf16" else torch.autocast("cpu", enabled=False)
                for bs in batch_sizes:
                    with amp:
                        e = tok(prompts[:bs], return_tensors="pt", padding=True)
                        model.generate(**e, max_new_tokens=2, do_sample=False, pad_token_id=tok.pad_token_id)  # warm-up
                        t = time.perf_counter(); gen = 0
                        for s in range(0, len(prompts), bs):
                            e = tok(prompts[s:s + bs], return_tensors="pt", padding=True)
                            o = model.generate(**e, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                               pad_token_id=tok.pad_token_id)
                            gen += (o.shape[1] - e["input_ids"].shape[1]) * o.shape[0]
                        dt = time.perf_counter() - t
                    rows.append(dict(kind="generate", model="smollm2-135m", variant=f"{prec} kv-cache", n=len(prompts), batch_size=bs,
                                     new_tokens=gen, time_s=dt, tokens_per_s=gen / dt))
                    log(f"  generate {prec} batch {bs:>2}: {gen / dt:8.1f} new tokens/s")
    finally: tok.padding_side = side
    return rows

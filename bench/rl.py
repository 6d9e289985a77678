"""RL and preference throughput: ftlab's DPO and GRPO steps vs trl's DPOTrainer and GRPOTrainer, and generation.

    python -m bench.rl [--layers 4] [--rounds 3] [--steps 4] [--quick]

Same policy (SmolLM2-135M-Instruct, its first `--layers` decoder layers, LoRA r=16 on every linear
layer), same pairs / prompts, same batch size, completion length, learning rate and β. Runs are
interleaved (ours, trl, ours, trl, …) for `rounds` rounds; each run's first step is not timed; the
figure is the median per-step time over the timed steps, turned into samples/s (pairs for DPO,
completions for GRPO); ratios are medians of per-round ratios. Generation: tokens/s of
`ftlab.rl.generate` for a batch with the KV cache, the same batch without it, and the prompts one by one.
CSV in bench/results/rl.csv.
"""
from __future__ import annotations
import argparse, copy, os, sys, tempfile, time, warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))

import torch

from bench.common import machine, median, write_csv

PROMPTS = ["This movie was", "The acting in this film", "I watched it and", "The plot", "Honestly, the director",
           "The ending", "Two hours of", "The soundtrack", "Every scene", "The script", "My friends and I", "By the end"]


def setup(layers):
    from ftlab.assets import load_causal_lm
    from ftlab.rl import keep_layers
    model, tok = load_causal_lm(); keep_layers(model, layers)
    return model.eval(), tok


def pairs_frame(n):
    import pandas as pd
    good = [" wonderful and warm", " a joy from start to finish", " clever, funny and moving", " great fun"]
    bad = [" dull and far too long", " a waste of time", " flat, lifeless and loud", " boring"]
    return pd.DataFrame(dict(prompt=[PROMPTS[i % len(PROMPTS)] for i in range(n)], chosen=[good[i % 4] for i in range(n)],
                             rejected=[bad[i % 4] for i in range(n)]))


class _Clock:
    "Step-end timestamps, for both the engine's callbacks and Trainer's."
    def __init__(self): self.t = []
    def on_step_end(self, *a, **k): self.t.append(time.perf_counter())
    def __getattr__(self, name):   # every other hook of either callback API: nothing to do
        if name.startswith("on_"): return lambda *a, **k: None
        raise AttributeError(name)
    order = 0
    def step_times(self): return [b - a for a, b in zip(self.t, self.t[1:])]   # the first step (warm-up) is not timed


def dpo_ours(ref, tok, df, steps, batch, lr, beta):
    from ftlab.engine import Optimization, fit
    from ftlab.preference import PairCollator, dpo_loss_fn, pair_dataset
    from ftlab.rl import lora_policy
    pol = lora_policy(copy.deepcopy(ref)); clock = _Clock()
    fit(pol, pair_dataset(df, tok), loss_fn=dpo_loss_fn(beta), frozen=dict(ref=ref), collate_fn=PairCollator(tok.pad_token_id),
        task="lm", max_steps=steps + 1, batch_size=batch, lr=lr, optimization=Optimization(weight_decay=0.0), plot=False, progress=False, callbacks=[clock])
    return median(clock.step_times())


def dpo_trl(ref, tok, df, steps, batch, lr, beta):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer
    from ftlab.rl import lora_policy
    class C(TrainerCallback):
        def __init__(self): self.t = []
        def on_step_end(self, *a, **k): self.t.append(time.perf_counter())
    pol = lora_policy(copy.deepcopy(ref)); c = C()
    cfg = DPOConfig(output_dir=tempfile.mkdtemp(), beta=beta, bf16=False, use_cpu=True, report_to=[], per_device_train_batch_size=batch,
                    max_steps=steps + 1, learning_rate=lr, activation_checkpointing=False, save_strategy="no", logging_steps=10_000,
                    disable_tqdm=True, lr_scheduler_type="linear", weight_decay=0.0)
    tr = DPOTrainer(model=pol, ref_model=copy.deepcopy(ref), args=cfg, processing_class=tok, train_dataset=Dataset.from_pandas(df),
                    callbacks=[c])   # a copy: trl wraps the module it is given
    tr.train()
    return median([b - a for a, b in zip(c.t, c.t[1:])])


def grpo_ours(ref, tok, steps, group, n_prompts, tokens, lr):
    from ftlab.preference import grpo_train
    from ftlab.rl import lora_policy, vader_reward
    pol = lora_policy(copy.deepcopy(ref)); ts = []
    for i in range(steps + 1):   # one step per call: the first (warm-up) not timed
        t = time.perf_counter()
        grpo_train(pol, tok, PROMPTS[i * n_prompts % len(PROMPTS):] + PROMPTS, vader_reward, steps=1, prompts_per_step=n_prompts,
                   group=group, lr=lr, max_new_tokens=tokens, progress=False, seed=i)
        ts.append(time.perf_counter() - t)
    return median(ts[1:])


def grpo_trl(path, tok, steps, group, n_prompts, tokens, lr):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from ftlab.rl import LORA_TARGETS, vader_reward
    class C(TrainerCallback):
        def __init__(self): self.t = []
        def on_step_end(self, *a, **k): self.t.append(time.perf_counter())
    c = C()
    cfg = GRPOConfig(output_dir=tempfile.mkdtemp(), num_generations=group, per_device_train_batch_size=group * n_prompts,
                     generation_batch_size=group * n_prompts, max_completion_length=tokens, max_steps=steps + 1, learning_rate=lr,
                     beta=0.0, bf16=False, use_cpu=True, report_to=[], activation_checkpointing=False, save_strategy="no",
                     logging_steps=10_000, disable_tqdm=True, temperature=1.0, top_k=0, top_p=1.0)
    def vader(prompts, completions, **kw): return vader_reward([p + c for p, c in zip(prompts, completions)]).tolist()
    tr = GRPOTrainer(model=path, reward_funcs=vader, args=cfg,
                     processing_class=tok, train_dataset=Dataset.from_dict(dict(prompt=PROMPTS * 4)), callbacks=[c],
                     peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM"))
    tr.train()
    return median([b - a for a, b in zip(c.t, c.t[1:])])


def generation(ref, tok, n, tokens, reps):
    from ftlab.rl import generate
    prompts = (PROMPTS * 4)[:n]; rows = []
    def rate(f):
        ts = []
        for r in range(reps + 1):
            t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
        return n * tokens / median(ts[1:])
    # min_new_tokens pins the length so every variant produces the same number of tokens
    def batched(cache): return lambda: _gen(ref, tok, prompts, tokens, cache)
    rows.append(dict(section="generate", variant="batched, KV cache", tokens_per_s=rate(batched(True))))
    rows.append(dict(section="generate", variant="batched, no cache", tokens_per_s=rate(batched(False))))
    rows.append(dict(section="generate", variant="one prompt at a time, KV cache",
                     tokens_per_s=rate(lambda: [_gen(ref, tok, [p], tokens, True) for p in prompts])))
    return rows


@torch.no_grad()
def _gen(model, tok, prompts, tokens, cache):
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True)
    return model.generate(**enc, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True, top_k=0, pad_token_id=tok.pad_token_id,
                          use_cache=cache)


def merged_copy(policy, dtype=torch.float32):
    "A plain (adapter-free) copy of a LoRA `policy` with the adapters merged in, in `dtype`: a rollout-only model."
    return copy.deepcopy(policy).merge_and_unload().to(dtype).eval()


def rollouts(ref, tok, n=12, tokens=8, reps=3):
    "tokens/s of `ftlab.rl.generate` on the LoRA policy as the RL chapters sample from it, and from merged copies."
    from ftlab.rl import generate, lora_policy, token_logprobs
    torch.manual_seed(0)
    pol = lora_policy(copy.deepcopy(ref))
    with torch.no_grad():   # trained-looking adapters (B = 0 at init would make merging a no-op)
        for name, p in pol.named_parameters():
            if "lora_B" in name: p.normal_(0, 0.02)
    prompts = (PROMPTS * 8)[:n]; rows = []
    def rate(make):
        ts = []
        for r in range(reps + 1):
            t = time.perf_counter(); m = make(); ro = generate(m, tok, prompts, tokens, seed=r); ts.append(time.perf_counter() - t)
        return sum(ro.completion_mask.sum(-1).tolist()) / median(ts[1:]), m, ro
    base, _, ro32 = rate(lambda: pol)
    rows.append(dict(section="rollout", variant="LoRA policy, fp32, unmerged (the chapters)", tokens_per_s=base))
    r32, _, _ = rate(lambda: merged_copy(pol))
    rows.append(dict(section="rollout", variant="merged fp32 copy per step", tokens_per_s=r32, speedup=r32 / base))
    r16, m16, _ = rate(lambda: merged_copy(pol, torch.bfloat16))
    with torch.no_grad():
        a, b = token_logprobs(pol, ro32), token_logprobs(m16, ro32).float()
    mask = ro32.completion_mask.bool()
    rows.append(dict(section="rollout", variant="merged bf16 copy per step", tokens_per_s=r16, speedup=r16 / base,
                     mean_abs_dlogp=(a - b).abs()[mask].mean().item()))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.rl", description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4, help="decoder layers of SmolLM2 kept (30 = the whole model)")
    ap.add_argument("--rounds", type=int, default=3); ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="1 round, 2 timed steps: check that it runs")
    ap.add_argument("--out", default=str(ROOT / "bench/results"))
    ap.add_argument("--only-rollouts", action="store_true", help="only the rollout section (no trl runs)")
    a = ap.parse_args(argv)
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"): os.environ.setdefault(k, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false"); warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error(); hf_logging.disable_progress_bar()
    if a.quick: a.rounds, a.steps = 1, 2
    ref, tok = setup(a.layers)
    if a.only_rollouts:
        rows = [dict(r, layers=a.layers, **machine()) for r in rollouts(ref, tok, reps=1 if a.quick else 3)]
        p = write_csv("rl_rollouts", rows, Path(a.out)); _print(rows, a, p); return
    path = tempfile.mkdtemp(); ref.save_pretrained(path); tok.save_pretrained(path)
    df = pairs_frame(4 * (a.steps + 1))
    dpo = dict(steps=a.steps, batch=4, lr=1e-4, beta=0.1); grpo = dict(steps=a.steps, group=4, n_prompts=2, tokens=8, lr=1e-4)
    rows, ratios = [], dict(dpo=[], grpo=[])
    for r in range(a.rounds):
        to, tt = dpo_ours(ref, tok, df, **dpo), dpo_trl(ref, tok, df, **dpo)
        go, gt = grpo_ours(ref, tok, **grpo), grpo_trl(path, tok, **grpo)
        for sec, (o, t), n in (("dpo", (to, tt), dpo["batch"]), ("grpo", (go, gt), grpo["group"] * grpo["n_prompts"])):
            rows += [dict(section=sec, variant="ftlab", round=r, step_s=o, samples_per_s=n / o),
                     dict(section=sec, variant="trl", round=r, step_s=t, samples_per_s=n / t)]
            ratios[sec].append(t / o)
        print(f"round {r}: DPO step ours {to:.2f} s, trl {tt:.2f} s; GRPO step ours {go:.2f} s, trl {gt:.2f} s", flush=True)
    rows += generation(ref, tok, 8, 16 if not a.quick else 4, 2 if a.quick else 3)
    rows += rollouts(ref, tok, reps=1 if a.quick else 3)
    for sec, rs in ratios.items(): rows.append(dict(section=sec, variant="ftlab / trl samples/s (median of rounds)", ratio=median(rs)))
    m = machine(); rows = [dict(r, layers=a.layers, **m) for r in rows]
    p = write_csv("rl", rows, Path(a.out)); _print(rows, a, p)


def _print(rows, a, p):
    print(f"\nSmolLM2 with {a.layers} layers, {a.rounds} rounds × {a.steps} timed steps; load {rows[-1]['load1']} ({p})")
    for r in rows:
        if "ratio" in r: print(f"  {r['section']}: ftlab / trl samples/s = {r['ratio']:.2f}")
        elif r["section"] in ("generate", "rollout"):
            extra = (f", ×{r['speedup']:.2f}" if "speedup" in r else "") + (f", mean |Δ log p| {r['mean_abs_dlogp']:.4f}" if "mean_abs_dlogp" in r else "")
            print(f"  {r['section']}, {r['variant']}: {r['tokens_per_s']:.1f} tokens/s{extra}")


if __name__ == "__main__":
    main()

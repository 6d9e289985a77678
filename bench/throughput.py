"""Training throughput: `ftlab.engine.fit` vs Hugging Face `Trainer` vs a bare PyTorch loop.

Same model (a fresh copy of one initial state per run), same tokenized data (tokenized once), same
batches in the same order (the plan `epoch_batches(lengths, batch_size, seed=0)` that `fit` uses;
Trainer is given it as its sampler), same dynamic padding, same optimizer (AdamW, same lr and
weight decay, no decay on biases/norms), same linear schedule over the same number of steps, same
gradient clipping. Runs are interleaved (A B C A B C …); each run's first `warmup` steps are not
timed. Throughput counts real (non-pad) tokens.
"""
from __future__ import annotations
import contextlib, copy, io, math, tempfile, time, warnings

import torch

from bench.common import median, ratio_ci, sync


# ------------------------------------------------------------------------------------------ data
def cls_task(n_train: int = 1024, max_length: int = 64):
    "MiniLM with a fresh 2-class head, and movie-review sentiment tokenized once."
    from ftlab.assets import load_encoder, load_sentiment
    from ftlab.engine import seed_everything, tokenize
    seed_everything(0)
    model, tok = load_encoder("encoder", num_labels=2)
    train = load_sentiment("movie")["train"].shuffle(seed=0).select(range(n_train))
    t = time.perf_counter(); ds = tokenize(train, tok, max_length); tok_s = time.perf_counter() - t
    return dict(name="minilm-cls", model=model, tok=tok, ds=ds, task="classification", tokenize_s=tok_s, lora=False)


def lm_task(n_train: int = 256, max_length: int = 64):
    "SmolLM2-135M (causal LM; LoRA added per run) on movie-review texts, labels = inputs."
    import datasets
    from ftlab.assets import load_causal_lm, load_sentiment
    from ftlab.engine import seed_everything
    seed_everything(0)
    model, tok = load_causal_lm()
    texts = load_sentiment("movie")["train"].shuffle(seed=0).select(range(n_train))["text"]
    t = time.perf_counter()
    enc = tok(list(texts), truncation=True, max_length=max_length)
    ds = datasets.Dataset.from_dict(dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=enc["input_ids"]))
    tok_s = time.perf_counter() - t
    return dict(name="smollm2-lora", model=model, tok=tok, ds=ds, task="lm", tokenize_s=tok_s, lora=True)


def fresh_model(spec):
    "A copy of the task's initial model (with freshly initialised, seeded LoRA adapters for the LM)."
    m = copy.deepcopy(spec["model"])
    if spec["lora"]:
        from peft import LoraConfig, get_peft_model
        torch.manual_seed(0)
        m = get_peft_model(m, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    return m


def columns(ds):
    return ds.select_columns([c for c in ds.column_names if c in ("input_ids", "attention_mask", "token_type_ids", "labels")]).to_dict()


def plan_for(spec, batch_size):
    from ftlab.engine import epoch_batches
    cols = columns(spec["ds"])
    lengths = [int(sum(m)) for m in cols["attention_mask"]]
    return cols, lengths, epoch_batches(lengths, batch_size, seed=0, epoch=0)


def param_groups(model, lr, wd):
    "AdamW groups by the engine's one rule (no weight decay on biases and norms), trainable parameters only."
    from ftlab.engine import param_groups as groups
    return groups(model, lr, wd, trainable_only=True)


# ------------------------------------------------------------------------------------- contenders
def run_fit(spec, cfg, fused=False, defaults=False):
    "fit on the shared plan in `cfg['precision']`; with `defaults`, fit as a user calls it (auto precision, length-grouped batches)."
    from ftlab.engine import Callback, Optimization, fit
    class Clock(Callback):
        def __init__(self): self.t, self.c = [], []
        def on_step_end(self, state): self.t.append(time.perf_counter()); self.c.append(time.process_time())
    clock = Clock(); model = fresh_model(spec)
    opt = dict(optimizer=lambda g: torch.optim.AdamW(g, lr=cfg["lr"], weight_decay=cfg["wd"], fused=True)) if fused else {}
    kw = {}
    if not defaults: kw.update(precision=cfg.get("precision", "fp32"), group_by_length=False)   # the same batches as the others
    t0 = time.perf_counter()
    res = fit(model, spec["ds"], task=spec["task"], max_steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
              optimization=Optimization(weight_decay=cfg["wd"], scheduler="linear", warmup=0, max_grad_norm=1.0, **opt), log_every=10, progress=False,
              plot=False, callbacks=[clock], tokenizer=spec["tok"], seed=0, **kw)
    wall = time.perf_counter() - t0
    last = res.history[res.history.split == "train"].loss.iloc[-1]
    return dict(t=clock.t, c=clock.c, wall=wall, t0=t0, model=res.model, last_loss=float(last))


def run_trainer(spec, cfg, order, defaults=False):
    "Trainer on the shared plan in `cfg['precision']`; with `defaults`, TrainingArguments' defaults (its sampler, fp32 on a CPU)."
    from transformers import (DataCollatorForSeq2Seq, DataCollatorWithPadding, Trainer, TrainerCallback,
                              TrainingArguments)
    from transformers.utils import logging as hf_logging
    class Clock(TrainerCallback):
        def __init__(self): self.t, self.c = [], []
        def on_step_end(self, args, state, control, **kw): self.t.append(time.perf_counter()); self.c.append(time.process_time())
    class PlanTrainer(Trainer):
        "Trainer fed the same example order as fit (a list is a valid sampler)."
        def _get_train_sampler(self, train_dataset=None): return order
    clock = Clock(); model = fresh_model(spec)
    coll = (DataCollatorForSeq2Seq(spec["tok"], padding=True, label_pad_token_id=-100) if spec["task"] == "lm"
            else DataCollatorWithPadding(spec["tok"]))
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore"); hf_logging.set_verbosity_error()
        if defaults:
            args = TrainingArguments(output_dir=d, per_device_train_batch_size=cfg["batch_size"], max_steps=cfg["steps"],
                                     learning_rate=cfg["lr"], weight_decay=cfg["wd"], logging_steps=min(10, cfg["steps"]),
                                     save_strategy="no", report_to="none", disable_tqdm=True, seed=0)
        else:
            args = TrainingArguments(output_dir=d, per_device_train_batch_size=cfg["batch_size"], max_steps=cfg["steps"],
                                     learning_rate=cfg["lr"], weight_decay=cfg["wd"], lr_scheduler_type="linear", warmup_steps=0,
                                     max_grad_norm=1.0, logging_steps=min(10, cfg["steps"]), save_strategy="no", report_to="none",
                                     disable_tqdm=True, seed=0, dataloader_num_workers=0, optim=cfg.get("trainer_optim", "adamw_torch_fused"),
                                     bf16=cfg.get("precision") == "bf16" or cfg.get("bf16", False),
                                     use_cpu=not torch.cuda.is_available())
        t0 = time.perf_counter()
        tr = (Trainer if defaults else PlanTrainer)(model=model, args=args, train_dataset=spec["ds"], data_collator=coll,
                                                     processing_class=spec["tok"], callbacks=[clock])
        with contextlib.redirect_stdout(io.StringIO()): tr.train()  # Trainer prints its log dicts
        wall = time.perf_counter() - t0
    logs = [h["loss"] for h in tr.state.log_history if "loss" in h]
    return dict(t=clock.t, c=clock.c, wall=wall, t0=t0, model=tr.model, last_loss=float(logs[-1]) if logs else float("nan"))


def run_bare(spec, cfg, cols, plan):
    "The loop a careful user writes by hand: no framework, same data plan, collator, optimizer and schedule."
    from ftlab.engine import Collator, seed_everything
    seed_everything(0)
    model = fresh_model(spec); dev = cfg.get("device", "cpu"); model.to(dev).train()
    collate, total = Collator(spec["tok"]), cfg["steps"]
    bf16 = cfg.get("bf16") or cfg.get("precision") == "bf16"
    amp = torch.autocast(torch.device(dev).type, dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    t0 = time.perf_counter()
    opt = torch.optim.AdamW(param_groups(model, cfg["lr"], cfg["wd"]), lr=cfg["lr"], weight_decay=cfg["wd"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.0, (total - t) / total))
    ts, cs, pending, last = [], [], [], float("nan")
    for s in range(total):
        idx = plan[s]
        batch = {k: v.to(dev, non_blocking=True) for k, v in collate({k: [c[j] for j in idx] for k, c in cols.items()}).items()}
        with amp: loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        pending.append(loss.detach())
        if (s + 1) % 10 == 0 or s + 1 == total: last = float(torch.stack(pending).mean()); pending = []
        ts.append(time.perf_counter()); cs.append(time.process_time())
    sync(dev)
    return dict(t=ts, c=cs, wall=time.perf_counter() - t0, t0=t0, model=model, last_loss=last)


# ------------------------------------------------------------------------------------------ driver
def compare(spec, cfg, contenders=("fit", "trainer", "bare"), rounds=3, log=print) -> list[dict]:
    """Interleave `contenders` for `rounds` rounds on `spec`; one row per run with samples/s and tokens/s
    over the steps after `cfg['warmup']`."""
    cols, lengths, plan = plan_for(spec, cfg["batch_size"])
    if len(plan) < cfg["steps"]: raise ValueError(f"{spec['name']}: {len(plan)} batches < {cfg['steps']} steps; use more data")
    order = [i for b in plan for i in b]
    W, S = cfg["warmup"], cfg["steps"]
    timed = plan[W:S]
    n_samples = sum(len(b) for b in timed); n_tok = sum(lengths[i] for b in timed for i in b)
    n_padded = sum(len(b) * max(lengths[i] for i in b) for b in timed)
    rows = []
    for r in range(rounds):
        k = r % len(contenders)   # rotate the order every round: no contender always runs first (or right after another)
        for c in list(contenders[k:]) + list(contenders[:k]):
            if c == "fit": out = run_fit(spec, cfg)
            elif c == "fit_fused": out = run_fit(spec, cfg, fused=True)
            elif c == "trainer": out = run_trainer(spec, cfg, order)
            elif c == "fit_defaults": out = run_fit(spec, cfg, defaults=True)
            elif c == "trainer_defaults": out = run_trainer(spec, cfg, order, defaults=True)
            elif c == "bare": out = run_bare(spec, cfg, cols, plan)
            else: raise ValueError(c)
            t = out["t"]
            if len(t) != S: raise RuntimeError(f"{c}: recorded {len(t)} steps, expected {S}")
            dt = t[-1] - t[W - 1] if W else t[-1] - out["t0"]
            cpu = out["c"][-1] - out["c"][W - 1] if W else float("nan")
            row = dict(task=spec["name"] + ("" if c.endswith("_defaults") else f" {cfg.get('precision', 'fp32')}"), round=r, contender=c, batch_size=cfg["batch_size"], timed_steps=S - W,
                       time_s=dt, step_ms=1000 * dt / (S - W), cpu_ms_per_step=1000 * cpu / (S - W), samples_per_s=n_samples / dt, tokens_per_s=n_tok / dt,
                       padded_tokens_per_s=n_padded / dt, pad_fraction=1 - n_tok / n_padded, call_wall_s=out["wall"],
                       setup_s=(t[0] - out["t0"]), last_loss=out["last_loss"], threads=torch.get_num_threads())
            rows.append(row)
            log(f"  {spec['name']:<13} round {r} {c:<10} {row['samples_per_s']:8.1f} samples/s  {row['tokens_per_s']:9.1f} tok/s  "
                f"step {row['step_ms']:7.1f} ms (cpu {row['cpu_ms_per_step']:7.1f} ms)  loss {row['last_loss']:.4f}")
            if c == "fit": fit_model = out["model"]
            if c == "bare": bare_model = out["model"]
            del out
        if r == 0 and "fit" in contenders and "bare" in contenders and cfg.get("precision", "fp32") == "fp32":
            a, b = fit_model.state_dict(), bare_model.state_dict()
            diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a if a[k].is_floating_point())
            log(f"  check: max |w_fit - w_bare| after {S} steps = {diff:.3g} (same data, init, optimizer and RNG)")
            for row in rows: row["fit_vs_bare_max_abs_dw"] = diff
    return rows


def fit_ratio(fit_runs: dict, other_runs: dict) -> dict:
    "fit's samples/s over another contender's, per round (`{round: row}` each): the median and its 95% interval over rounds."
    ratios = [fit_runs[k]["samples_per_s"] / other_runs[k]["samples_per_s"] for k in other_runs if k in fit_runs]
    _, lo, hi = ratio_ci(ratios)
    return dict(fit_over_this=median(ratios), ratio_lo=lo, ratio_hi=hi)


def summarize(rows) -> list[dict]:
    "Median per contender, and ratios fit/x as the median of per-round ratios (robust to drift) with a 95% interval over rounds."
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        rs = [r for r in rows if r["task"] == task]
        cons = list(dict.fromkeys(r["contender"] for r in rs))
        by = {c: {r["round"]: r for r in rs if r["contender"] == c} for c in cons}
        for c in cons:
            d = dict(task=task, contender=c, runs=len(by[c]),
                     samples_per_s=median(r["samples_per_s"] for r in by[c].values()),
                     tokens_per_s=median(r["tokens_per_s"] for r in by[c].values()),
                     step_ms=median(r["step_ms"] for r in by[c].values()),
                     cpu_ms_per_step=median(r["cpu_ms_per_step"] for r in by[c].values()),
                     setup_s=median(r["setup_s"] for r in by[c].values()))
            if "fit" in by and c != "fit":
                d.update(fit_ratio(by["fit"], by[c]))
                d["fit_over_this_cpu"] = median(by[c][k]["cpu_ms_per_step"] / by["fit"][k]["cpu_ms_per_step"] for k in by[c] if k in by["fit"])
            out.append(d)
    return out

"""CPU model-FLOPs utilisation of a MiniLM training step, and where the rest of the time goes.

Achieved training FLOP/s ≈ 6 × N (non-embedding parameters) × real tokens/s, against the fp32 matmul
rate measured on the same machine with the same threads. The step is split into timed phases
(collate, forward, backward, clip, optimizer) in a hand-instrumented copy of the loop, and the
gap is broken down: padding, the rate of matmuls at the model's own (small) shapes, the optimizer
implementation, tokenisation (done once, outside the loop).
"""
from __future__ import annotations
import time

import torch

from bench.common import Timer, matmul_gflops, median, non_embedding_params
from bench.throughput import fresh_model, param_groups, plan_for


def gemm_gflops(m, k, n, reps=20):
    "fp32 rate of an (m×k)@(k×n) product, the shape a layer of the model multiplies."
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3): a @ b
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
    return 2 * m * k * n / median(ts) / 1e9


def optimizer_step_ms(model, kinds=("for-loop", "foreach", "fused"), reps=5):
    "Time one AdamW step on `model`'s parameters (random gradients) for each implementation."
    out = {}
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params: p.grad = torch.randn_like(p) * 1e-3
    for kind in kinds:
        kw = dict(foreach=False) if kind == "for-loop" else dict(foreach=True) if kind == "foreach" else dict(fused=True)
        try: opt = torch.optim.AdamW(params, lr=1e-5, **kw)
        except Exception as e: out[kind] = float("nan"); continue
        opt.step()
        ts = []
        for _ in range(reps):
            t = time.perf_counter(); opt.step(); ts.append(time.perf_counter() - t)
        out[kind] = 1000 * median(ts)
    for p in params: p.grad = None
    return out


def breakdown(spec, batch_size=32, warmup=2, steps=8, peak_gflops=None, log=print) -> tuple[list[dict], dict]:
    "Per-phase step time and the FLOP accounting of `spec`'s model (full fine-tuning, default AdamW)."
    from ftlab.engine import Collator, epoch_batches, seed_everything
    cols, lengths, plan = plan_for(spec, batch_size)
    seed_everything(0)
    model = fresh_model(spec).train()
    N = non_embedding_params(model)
    total = warmup + steps
    opt = torch.optim.AdamW(param_groups(model, 5e-5, 0.01), lr=5e-5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.0, (total - t) / total))
    coll = Collator(spec["tok"])
    peaks = [matmul_gflops(1024, reps=10)["gflops_best"]]  # the peak right next to the step: load on a shared machine drifts
    for s in range(total):
        if s == warmup: timer = Timer(); t0 = time.perf_counter()
        tm = timer if s >= warmup else Timer()
        with tm("collate"): batch = coll({k: [c[j] for j in plan[s]] for k, c in cols.items()})
        with tm("forward"): loss = model(**batch).loss
        with tm("backward"): loss.backward()
        with tm("clip"): torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        with tm("optimizer"): opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
    wall = time.perf_counter() - t0
    peaks.append(matmul_gflops(1024, reps=10)["gflops_best"])
    peak_gflops = max([p for p in (peak_gflops, *peaks) if p])
    timed = plan[warmup:total]
    real = sum(lengths[i] for b in timed for i in b) / steps
    padded = sum(len(b) * max(lengths[i] for i in b) for b in timed) / steps
    ms = timer.ms(); step_ms = 1000 * wall / steps
    phases = [dict(phase=k, ms_per_step=v, share=v / step_ms) for k, v in ms.items()]
    phases.append(dict(phase="other (loop, python)", ms_per_step=step_ms - sum(ms.values()), share=1 - sum(ms.values()) / step_ms))
    # padding under random batches vs length-grouped ones (what fit(group_by_length=True) does)
    gplan = epoch_batches(lengths, batch_size, seed=0, epoch=0, group_by_length=True)
    pad_rand = 1 - sum(lengths[i] for b in plan for i in b) / sum(len(b) * max(lengths[i] for i in b) for b in plan)
    pad_group = 1 - sum(lengths[i] for b in gplan for i in b) / sum(len(b) * max(lengths[i] for i in b) for b in gplan)
    cfg = model.config
    h, inter = cfg.hidden_size, getattr(cfg, "intermediate_size", 4 * cfg.hidden_size)
    M = int(padded)
    g_qkv, g_ffn = gemm_gflops(M, h, h), gemm_gflops(M, h, inter)
    opt_ms = optimizer_step_ms(model)
    fwd_bwd_s = (ms["forward"] + ms["backward"]) / 1000
    acc = dict(task=spec["name"], batch_size=batch_size, N_nonemb=N, step_ms=step_ms, real_tokens_per_step=real,
               padded_tokens_per_step=padded, pad_fraction=1 - real / padded, pad_fraction_grouped=pad_group, pad_fraction_random_epoch=pad_rand,
               tokens_per_s=real * steps / wall, achieved_gflops=6 * N * real * steps / wall / 1e9,
               fwd_bwd_gflops_on_padded=6 * N * padded / fwd_bwd_s / 1e9,
               gemm_gflops_MxHxH=g_qkv, gemm_gflops_MxHxI=g_ffn,
               adamw_ms_forloop=opt_ms.get("for-loop"), adamw_ms_foreach=opt_ms.get("foreach"), adamw_ms_fused=opt_ms.get("fused"),
               tokenize_us_per_example=1e6 * spec["tokenize_s"] / len(spec["ds"]), train_us_per_example=1e6 * wall / (steps * batch_size))
    if peak_gflops:
        acc.update(peak_gflops=peak_gflops, mfu=acc["achieved_gflops"] / peak_gflops,
                   fwd_bwd_efficiency_on_padded=acc["fwd_bwd_gflops_on_padded"] / peak_gflops,
                   gemm_efficiency_model_shapes=(g_qkv + g_ffn) / 2 / peak_gflops)
    log(f"  {spec['name']}: {acc['achieved_gflops']:.1f} GFLOP/s achieved (6N·real tokens/s), MFU {acc.get('mfu', float('nan')):.1%}; "
        f"padding {acc['pad_fraction']:.1%} (length-grouped {pad_group:.1%}); GEMM at model shapes {g_qkv:.0f}/{g_ffn:.0f} GFLOP/s")
    return phases, acc


def fit_mfu(spec, batch_size=32, warmup=2, steps=8, peak_gflops=None, group_by_length=True, precision="fp32", log=print) -> dict:
    """MFU of `ftlab.engine.fit` itself as the chapters run it (length-grouped batches, fused AdamW, clipping), on the
    same model and data as `breakdown`: 6 × N × real tokens of the timed steps / their wall time."""
    from ftlab.engine import Callback, Optimization, epoch_batches, fit
    _, lengths, _ = plan_for(spec, batch_size)
    plan = epoch_batches(lengths, batch_size, seed=0, epoch=0, shuffle=True, group_by_length=group_by_length)
    class Clock(Callback):
        def __init__(self): self.t = []
        def on_step_end(self, state): self.t.append(time.perf_counter())
    clock, model = Clock(), fresh_model(spec)
    N, total = non_embedding_params(model), warmup + steps
    fit(model, spec["ds"], task=spec["task"], max_steps=total, batch_size=batch_size, lr=5e-5, optimization=Optimization(weight_decay=0.01),
        group_by_length=group_by_length, progress=False, plot=False, callbacks=[clock], tokenizer=spec["tok"], seed=0,
        precision=precision)
    wall = clock.t[-1] - clock.t[warmup - 1]
    timed = plan[warmup:total]
    real = sum(lengths[i] for b in timed for i in b); padded = sum(len(b) * max(lengths[i] for i in b) for b in timed)
    out = dict(fit_precision=precision, fit_group_by_length=group_by_length, fit_tokens_per_s=real / wall, fit_pad_fraction=1 - real / padded,
               fit_achieved_gflops=6 * N * real / wall / 1e9)
    if peak_gflops: out["fit_mfu"] = out["fit_achieved_gflops"] / peak_gflops
    log(f"  fit as the chapters run it ({precision}, group_by_length={group_by_length}): {out['fit_achieved_gflops']:.1f} GFLOP/s achieved, "
        f"MFU {out.get('fit_mfu', float('nan')):.1%}, padding {out['fit_pad_fraction']:.1%}")
    return out

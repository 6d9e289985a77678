"""Where a bf16 training step's time goes on the CPU, and whether `torch.compile` pays for itself.

`op_profile`: `torch.profiler` over a few MiniLM training steps under bf16 autocast (fp32 master weights, fused AdamW,
length-grouped batches as `fit` makes them). Each op's *self* CPU time is put in a category (GEMMs, attention
softmax, layer norm, activations, dtype casts, the optimizer, ...); whatever the ops do not account for is the Python,
autograd-engine and dispatcher overhead between them.

`compile_compare`: the same step eager and with `torch.compile(model, dynamic=True)` (inductor, the default backend;
dynamic shapes, since length-grouped batches change the sequence length every step), the same batches: the first
compiled step's time (compilation), the median step time after warm-up, the loss of the first step in both (close,
not equal: inductor draws its own dropout masks), and the break-even number of steps.
"""
from __future__ import annotations
import time
from collections import defaultdict

import torch

from bench.common import median
from bench.throughput import fresh_model, param_groups, plan_for

# op-name fragments -> category, first match wins (names are aten::... as the profiler reports them)
CATEGORIES = [
    ("GEMM (linear, attention matmuls)", ("mm", "addmm", "bmm", "matmul", "linear", "baddbmm", "_scaled_dot_product", "scaled_dot_product")),
    ("softmax", ("softmax",)),
    ("layer norm", ("layer_norm",)),
    ("activation (GELU)", ("gelu",)),
    ("dtype casts (autocast)", ("_to_copy", "aten::to", "copy_", "_autocast")),
    ("optimizer (fused AdamW)", ("adam",)),
    ("loss", ("cross_entropy", "nll_loss", "log_softmax")),
    ("dropout", ("dropout", "bernoulli", "native_dropout")),
    ("embedding", ("embedding",)),
    ("elementwise + reductions", ("add", "mul", "div", "sub", "sum", "mean", "where", "masked_fill", "rsub", "neg", "sqrt", "pow", "norm", "fill_", "zero_", "clamp")),
]


def _category(name: str) -> str:
    n = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in n for k in keys): return cat
    return "other ops (views, allocations, ...)"


def _step_fn(model, opt, coll, cols, plan, precision):
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else (lambda: torch.autocast("cpu", enabled=False))
    def step(s):
        batch = coll({k: [c[j] for j in plan[s]] for k, c in cols.items()})
        with ctx(): loss = model(**batch).loss
        loss.float().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
        return loss.detach().float().item()
    return step


def _setup(spec, batch_size, n_steps):
    from ftlab.engine import Collator, epoch_batches, seed_everything
    cols, lengths, _ = plan_for(spec, batch_size)
    plan = epoch_batches(lengths, batch_size, seed=0, epoch=0, shuffle=True, group_by_length=True)
    plan = (plan * (n_steps // max(1, len(plan)) + 1))[:n_steps]
    seed_everything(0)
    model = fresh_model(spec).train()
    opt = torch.optim.AdamW(param_groups(model, 5e-5, 0.01), lr=5e-5, fused=True)
    return model, opt, Collator(spec["tok"]), cols, plan


def op_profile(spec, batch_size=32, warmup=2, steps=6, precision="bf16", log=print) -> list[dict]:
    "Self CPU time per op category over `steps` profiled training steps (after `warmup`), ms per step and share."
    from torch.profiler import ProfilerActivity, profile
    model, opt, coll, cols, plan = _setup(spec, batch_size, warmup + steps)
    step = _step_fn(model, opt, coll, cols, plan, precision)
    for s in range(warmup): step(s)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for s in range(warmup, warmup + steps): step(s)
        wall = time.perf_counter() - t0
    per = defaultdict(float)
    for e in prof.key_averages():
        if e.key.startswith("aten::") or e.key.startswith("Optimizer") or "adam" in e.key.lower():
            per[_category(e.key)] += e.self_cpu_time_total / 1e3   # µs -> ms
    step_ms = 1000 * wall / steps
    rows = [dict(precision=precision, category=k, ms_per_step=v / steps, share=v / steps / step_ms) for k, v in sorted(per.items(), key=lambda kv: -kv[1])]
    accounted = sum(r["ms_per_step"] for r in rows)
    rows.append(dict(precision=precision, category="python, autograd engine, dispatch (unaccounted)", ms_per_step=step_ms - accounted, share=1 - accounted / step_ms))
    rows.append(dict(precision=precision, category="step (wall, profiled)", ms_per_step=step_ms, share=1.0))
    gemm = next((r["share"] for r in rows if r["category"].startswith("GEMM")), 0.0)
    log(f"  {precision} step {step_ms:.0f} ms under the profiler: GEMMs {gemm:.0%}, unaccounted {rows[-2]['share']:.0%}")
    return rows


def compile_compare(spec, batch_size=32, warmup=3, steps=8, precision="bf16", chapter_steps=60, log=print) -> dict:
    """Eager vs `torch.compile(model)` on the same batches: compile time, steady-state step time, first-step losses, and
    the number of steps after which compiling has paid for itself (`inf` if it never does)."""
    out = dict(precision=precision, batch_size=batch_size)
    res, warmup = {}, max(warmup, 3)
    for kind in ("eager", "compiled"):
        model, opt, coll, cols, plan = _setup(spec, batch_size, warmup + steps)
        m = model
        if kind == "compiled":
            # dynamic=True: length-grouped batches change the sequence length every step, and a static-shape graph
            # would recompile for each new length
            try: m = torch.compile(model, dynamic=True)
            except Exception as e:
                out["compile_error"] = repr(e)[:200]; log(f"  torch.compile failed: {e!r}"); return out
        step = _step_fn(m, opt, coll, cols, plan, precision)
        ts, losses = [], []
        try:
            for s in range(warmup + steps):
                t = time.perf_counter(); losses.append(step(s)); ts.append(time.perf_counter() - t)
        except Exception as e:
            out["compile_error"] = repr(e)[:200]; log(f"  torch.compile step failed: {e!r}"); return out
        res[kind] = dict(first_s=ts[0], step_ms=1000 * median(ts[warmup:]), loss0=losses[0])
    e, c = res["eager"], res["compiled"]
    gain_per_step = (e["step_ms"] - c["step_ms"]) / 1000
    extra = c["first_s"] - e["first_s"]   # the compilation (and recompilations for new shapes during warm-up are in the warm-up steps)
    out.update(eager_step_ms=e["step_ms"], compiled_step_ms=c["step_ms"], speedup=e["step_ms"] / c["step_ms"],
               compile_s=extra, loss0_eager=e["loss0"], loss0_compiled=c["loss0"],
               break_even_steps=(extra / gain_per_step) if gain_per_step > 0 else float("inf"),
               chapter_steps=chapter_steps,
               chapter_time_eager_s=chapter_steps * e["step_ms"] / 1000,
               chapter_time_compiled_s=extra + chapter_steps * c["step_ms"] / 1000)
    log(f"  torch.compile ({precision}): step {e['step_ms']:.0f} -> {c['step_ms']:.0f} ms ({out['speedup']:.2f}x), compile {extra:.0f} s, "
        f"break-even after {out['break_even_steps']:.0f} steps; first-step loss {e['loss0']:.4f} eager vs {c['loss0']:.4f} compiled")
    return out

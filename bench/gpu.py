"""GPU benchmark: bf16 matmul peak, and SmolLM2-135M-architecture SFT throughput / MFU with `ftlab.engine.fit`.

The model is built from SmolLM2-135M's config with random weights: throughput does not depend on
the weights' values, only on the architecture, the sequence length and the batch size. Data are
synthetic token ids (sequence length 512, no padding), labels = inputs (causal-LM loss).

Run on a GPU machine from the repository root:

    python -m bench.gpu --config PATH/TO/config.json [--batch-sizes 16 32 64] [--compile]

(`~/.cache/ftlab/causal_lm/config.json` by default; a machine without the assets needs a copy of
that file). Writes `gpu_*.csv` to `--out` (default bench/results) and prints a table last.
`--smoke` runs a tiny configuration on the CPU to check the code path.
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, time, traceback, warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
from bench.common import matmul_gflops, non_embedding_params, table, write_csv  # noqa: E402


class ListDataset:
    "The few `datasets.Dataset` methods `fit` uses, for machines without the `datasets` package."
    def __init__(self, cols): self.cols = cols
    @property
    def column_names(self): return list(self.cols)
    def __len__(self): return len(next(iter(self.cols.values())))
    def __getitem__(self, i): return {k: v[i] for k, v in self.cols.items()}
    def select_columns(self, names): return ListDataset({k: self.cols[k] for k in names})
    def to_dict(self): return dict(self.cols)


def synthetic(n, seq, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (n, seq), generator=g).tolist()
    cols = dict(input_ids=ids, attention_mask=[[1] * seq for _ in range(n)], labels=ids)
    try:
        import datasets
        return datasets.Dataset.from_dict(cols)
    except Exception:
        return ListDataset(cols)


def build_model(cfg_path, smoke=False, device="cpu"):
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = AutoConfig.from_pretrained(cfg_path) if Path(cfg_path).is_dir() else AutoConfig.for_model(**{k: v for k, v in json.loads(Path(cfg_path).read_text()).items() if k not in ("architectures", "transformers_version", "_model_name_or_path")})
    if smoke: cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim = 2, 64, 128, 512, 4, 2, 16
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    return m, cfg


def flops_per_token(model, cfg, seq):
    "Training FLOPs per token: 6·N (non-embedding), + the tied lm_head matmul, + causal attention scores."
    n = non_embedding_params(model)
    lm_head = cfg.hidden_size * cfg.vocab_size
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attn = 6 * cfg.num_hidden_layers * seq * cfg.num_attention_heads * hd  # 2 matmuls (QK^T, PV), fwd+bwd=3x, causal half: 12*L*s*d/2
    return dict(N_nonemb=n, f_6N=6 * n, f_6N_head=6 * (n + lm_head), f_full=6 * (n + lm_head) + attn)


class SyncWatch:
    "Record every host-device synchronisation torch reports (sync debug mode) with the Python line that caused it."
    def __init__(self): self.events = []
    def __enter__(self):
        import traceback as tb
        self.old = warnings.showwarning
        def show(message, category, filename, lineno, file=None, line=None):
            stack = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in tb.extract_stack()[:-1]
                     if "ftlab" in f.filename or "bench" in f.filename or "accelerate" in f.filename or "torch/optim" in f.filename]
            self.events.append(dict(message=str(message).splitlines()[0][:120], where=" < ".join(reversed(stack[-4:]))))
        warnings.showwarning = show
        self.cm = warnings.catch_warnings(); self.cm.__enter__(); warnings.simplefilter("always"); warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")
        return self
    def __exit__(self, *a):
        torch.cuda.set_sync_debug_mode(0)
        self.cm.__exit__(*a); warnings.showwarning = self.old


def run_fit(model, ds, bs, warmup, steps, fused=False, watch_syncs=False, lr=1e-4):
    from ftlab.engine import Callback, Optimization, fit
    cuda = torch.cuda.is_available()
    class Clock(Callback):
        def __init__(self): self.t = {}
        def on_step_end(self, state):
            if state.step in (warmup, warmup + steps):
                if cuda: torch.cuda.synchronize()
                self.t[state.step] = time.perf_counter()
    clock = Clock()
    opt = dict(optimizer=lambda g: torch.optim.AdamW(g, lr=lr, weight_decay=0.01, fused=True)) if fused else {}
    if cuda: torch.cuda.reset_peak_memory_stats()
    watch = SyncWatch() if (watch_syncs and cuda) else None
    class WatchFrom(Callback):
        "Switch sync watching on after the warm-up steps (compilation/allocation noise excluded)."
        def on_step_end(self, state):
            if watch and state.step == warmup: watch.__enter__()
    try:
        res = fit(model, ds, task="lm", max_steps=warmup + steps, batch_size=bs, lr=lr, optimization=Optimization(weight_decay=0.01, scheduler="linear", **opt),
                  log_every=10, progress=False, plot=False, callbacks=[clock, WatchFrom()], seed=0)
    finally:
        if watch and hasattr(watch, "cm"): watch.__exit__(None, None, None)
    dt = clock.t[warmup + steps] - clock.t[warmup]
    mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return dt, mem, (watch.events if watch else []), res


def run_bare(model, ds, bs, warmup, steps, fused=False, lr=1e-4, pinned=False):
    "Hand-written loop: same batches, collator, AdamW groups, schedule, clipping; torch.autocast bf16."
    from ftlab.engine import Collator, epoch_batches, param_groups, seed_everything
    seed_everything(0)
    cuda = torch.cuda.is_available(); dev = "cuda" if cuda else "cpu"
    model.to(dev).train()
    cols = ds.select_columns(["input_ids", "attention_mask", "labels"]).to_dict()
    plan = epoch_batches([len(x) for x in cols["input_ids"]], bs, 0, 0)
    opt = torch.optim.AdamW(param_groups(model, lr, 0.01), lr=lr, fused=True if fused else None)   # the engine's no-decay rule
    total = warmup + steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.0, (total - t) / total))
    coll = Collator(pad_token_id=0)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    if cuda: torch.cuda.reset_peak_memory_stats()
    pend, t = [], {}
    for s in range(total):
        b = coll({k: [c[j] for j in plan[s]] for k, c in cols.items()})
        if pinned and cuda: b = {k: v.pin_memory() for k, v in b.items()}
        b = {k: v.to(dev, non_blocking=True) for k, v in b.items()}
        with amp: loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        pend.append(loss.detach())
        if (s + 1) % 10 == 0: float(torch.stack(pend).mean()); pend = []
        if s + 1 in (warmup, total):
            if cuda: torch.cuda.synchronize()
            t[s + 1] = time.perf_counter()
    mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return t[total] - t[warmup], mem


def gpu_busy(model, ds, bs, steps=4):
    "Fraction of wall time the GPU spends in kernels during `steps` fit steps (torch.profiler), and the top kernels."
    from torch.profiler import ProfilerActivity, profile
    from ftlab.engine import Callback, Optimization, fit
    state_t = {}
    class Mark(Callback):
        def on_step_end(self, state):
            torch.cuda.synchronize(); state_t[state.step] = time.perf_counter()
    prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
    class Prof(Callback):
        def on_step_end(self, state):
            if state.step == 2: prof.__enter__()
            if state.step == 2 + steps: prof.__exit__(None, None, None)
    fit(model, ds, task="lm", max_steps=2 + steps, batch_size=bs, lr=1e-4, log_every=10, progress=False, plot=False,
        callbacks=[Mark(), Prof()], seed=0)
    wall = state_t[2 + steps] - state_t[2]
    ka = prof.key_averages()
    dev_attr = "self_device_time_total" if hasattr(ka[0], "self_device_time_total") else "self_cuda_time_total"
    kern = sum(getattr(e, dev_attr) for e in ka) / 1e6
    top = sorted(ka, key=lambda e: -getattr(e, dev_attr))[:12]
    rows = [dict(name=e.key[:70], calls=e.count, device_ms=getattr(e, dev_attr) / 1e3, share=getattr(e, dev_attr) / 1e6 / max(kern, 1e-9)) for e in top]
    n_launch = sum(e.count for e in ka if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx"))
    syncs = {e.key: e.count for e in ka if "Synchronize" in e.key or "cudaMemcpy" == e.key or "cudaStreamWaitEvent" == e.key}
    return dict(wall_s=wall, kernel_s=kern, busy=kern / wall, launches_per_step=n_launch / steps, syncs=syncs), rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(Path.home() / ".cache/ftlab/causal_lm/config.json"))
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--variants", nargs="+", default=["fit", "bare", "fit_fused", "bare_fused"])
    ap.add_argument("--no-profile", action="store_true", help="skip the torch.profiler GPU-busy measurement")
    ap.add_argument("--compile", action="store_true", help="also time fit on torch.compile(model) (slow to compile)")
    ap.add_argument("--compile-if-under", type=float, default=300, help="skip --compile if this many seconds have passed")
    ap.add_argument("--smoke", action="store_true", help="tiny model, CPU allowed: check the code path")
    ap.add_argument("--out", default=str(ROOT / "bench/results"))
    a = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not a.smoke: sys.exit("bench.gpu needs a CUDA GPU (or --smoke).")
    if a.smoke: a.seq, a.batch_sizes, a.warmup, a.steps = 32, [2], 1, 2
    out = Path(a.out); rows, peaks, info = [], [], {}
    T0 = time.time()
    if cuda:
        info = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, cuda=torch.version.cuda)
        try: info["smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu", "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception as e: info["smi"] = repr(e)
        torch.backends.cuda.matmul.allow_tf32 = False
        peaks.append(matmul_gflops(8192, torch.bfloat16, "cuda", reps=10, warmup=3, inner=5))
        peaks.append(matmul_gflops(4096, torch.float32, "cuda", reps=5, warmup=2, inner=3))
        torch.backends.cuda.matmul.allow_tf32 = True
        peaks.append({**matmul_gflops(4096, torch.float32, "cuda", reps=5, warmup=2, inner=3), "dtype": "tf32"})
        torch.backends.cuda.matmul.allow_tf32 = False
    else:
        peaks.append(matmul_gflops(512, torch.float32, "cpu", reps=3))
    peak = peaks[0]["gflops_median"] * 1e9
    print(table(peaks, ["dtype", "n", "gflops_median", "gflops_best", "median_s"], "matmul peak"), flush=True)
    print(info, flush=True)
    import ftlab.engine as E
    print("fit mixed precision:", E.get_accelerator("auto").mixed_precision, flush=True)
    base, cfg = build_model(a.config, a.smoke)
    ft = flops_per_token(base, cfg, a.seq)
    print({k: f"{v/1e6:.1f}M" for k, v in ft.items()}, flush=True)
    import copy
    syncs = []
    for bs in a.batch_sizes:
        ds = synthetic(bs * (a.warmup + a.steps), a.seq, cfg.vocab_size)
        tokens = bs * a.seq * a.steps
        for variant in a.variants:
            try:
                m = copy.deepcopy(base)
                if variant.startswith("fit"):
                    dt, mem, ev, _ = run_fit(m, ds, bs, a.warmup, a.steps, fused=variant.endswith("fused"), watch_syncs=(variant == "fit" and bs == a.batch_sizes[0]))
                    if ev: syncs += [dict(batch_size=bs, **e) for e in ev]
                else:
                    dt, mem = run_bare(m, ds, bs, a.warmup, a.steps, fused=variant.endswith("fused"))
                tps = tokens / dt
                r = dict(variant=variant, batch_size=bs, seq=a.seq, step_ms=1000 * dt / a.steps, tokens_per_s=tps,
                         tflops_6N=ft["f_6N"] * tps / 1e12, mfu_6N=ft["f_6N"] * tps / peak, mfu_6N_head=ft["f_6N_head"] * tps / peak,
                         mfu_full=ft["f_full"] * tps / peak, peak_mem_gib=mem)
            except torch.OutOfMemoryError as e:
                r = dict(variant=variant, batch_size=bs, seq=a.seq, error="OOM")
            except Exception as e:
                traceback.print_exc(); r = dict(variant=variant, batch_size=bs, seq=a.seq, error=repr(e)[:200])
            rows.append(r); print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
            del m
            if cuda: torch.cuda.empty_cache()
    prof_rows = []
    if cuda and not a.no_profile:
        bs = a.batch_sizes[min(1, len(a.batch_sizes) - 1)]
        try:
            busy, prof_rows = gpu_busy(copy.deepcopy(base), synthetic(bs * 8, a.seq, cfg.vocab_size), bs)
            print("GPU busy during fit steps (bs=%d):" % bs, busy, flush=True)
            info["busy"] = busy
        except Exception: traceback.print_exc()
        torch.cuda.empty_cache()
    def save():
        out.mkdir(parents=True, exist_ok=True)
        write_csv("gpu_throughput", [{**r, **{k: v for k, v in info.items() if k != "busy"}} for r in rows], out)
        write_csv("gpu_matmul", peaks, out)
        if syncs: write_csv("gpu_syncs", syncs, out)
        if prof_rows: write_csv("gpu_profile", prof_rows, out)
    save()  # before the optional compile, which may run past a time limit
    if a.compile and cuda and time.time() - T0 < a.compile_if_under:
        bs = a.batch_sizes[min(1, len(a.batch_sizes) - 1)]
        try:
            m = torch.compile(copy.deepcopy(base))
            ds = synthetic(bs * (a.warmup + a.steps + 2), a.seq, cfg.vocab_size)
            t = time.time(); dt, mem, _, _ = run_fit(m, ds, bs, a.warmup + 2, a.steps)
            tps = bs * a.seq * a.steps / dt
            r = dict(variant="fit_compiled", batch_size=bs, seq=a.seq, step_ms=1000 * dt / a.steps, tokens_per_s=tps,
                     tflops_6N=ft["f_6N"] * tps / 1e12, mfu_6N=ft["f_6N"] * tps / peak, mfu_6N_head=ft["f_6N_head"] * tps / peak,
                     mfu_full=ft["f_full"] * tps / peak, peak_mem_gib=mem, compile_and_run_s=time.time() - t)
        except Exception as e:
            traceback.print_exc(); r = dict(variant="fit_compiled", batch_size=bs, seq=a.seq, error=repr(e)[:200])
        rows.append(r); print(r, flush=True); save()
    print(f"\nsynchronisations seen by torch.cuda sync debug mode in fit's steps after warm-up: {len(syncs)}")
    for s in {(e['message'], e['where']) for e in syncs}: print("  ", s)
    if prof_rows: print(table(prof_rows, title="top device time (fit steps)"))
    print(table(rows, ["variant", "batch_size", "step_ms", "tokens_per_s", "tflops_6N", "mfu_6N", "mfu_6N_head", "mfu_full", "peak_mem_gib"],
                f"SmolLM2-135M arch, seq {a.seq}, bf16 autocast; peak {peaks[0]['dtype']} {peak/1e12:.0f} TFLOP/s"))
    print(f"total {time.time() - T0:.0f}s")


if __name__ == "__main__":
    main()

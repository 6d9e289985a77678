"""Run the CPU benchmarks: `python -m bench` (or `python bench/run.py`). See bench/README.md.

Sections: matmul peak, training throughput (fit vs Trainer vs bare loop; MiniLM classification and
SmolLM2 + LoRA), CPU MFU breakdown, inference (evaluate; generation with/without KV cache).
CSV files go to bench/results/ and a table is printed at the end.
"""
from __future__ import annotations
import argparse, json, os, sys, time, warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))

SECTIONS = ("throughput", "precision", "mfu", "profile", "inference")

# one place for both sizes: `--quick` is a smoke run, the default fits in < 10 minutes on 2 idle cores
CONFIG = dict(
    default=dict(cls=dict(n_train=1024, max_length=64, batch_size=32, warmup=3, steps=23, lr=5e-5, wd=0.01),
                 lm=dict(n_train=256, max_length=64, batch_size=8, warmup=2, steps=7, lr=2e-4, wd=0.01),
                 rounds=3, mfu=dict(batch_size=32, warmup=2, steps=8), eval_n=512, gen_tokens=24),
    quick=dict(cls=dict(n_train=256, max_length=64, batch_size=16, warmup=1, steps=4, lr=5e-5, wd=0.01),
               lm=dict(n_train=64, max_length=32, batch_size=4, warmup=1, steps=3, lr=2e-4, wd=0.01),
               rounds=1, mfu=dict(batch_size=16, warmup=1, steps=2), eval_n=128, gen_tokens=4),
)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench", description="ftlab CPU benchmarks (GPU: python -m bench.gpu)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check that everything runs (numbers meaningless)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds of the throughput comparison")
    ap.add_argument("--steps", type=int, help="timed steps per run (both tasks; warm-up steps unchanged)")
    ap.add_argument("--no-lm", action="store_true", help="skip SmolLM2 (LoRA training and generation)")
    ap.add_argument("--out", default=str(ROOT / "bench/results"))
    a = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"): os.environ.setdefault(k, "1")
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error(); hf_logging.disable_progress_bar()
    try:
        import datasets; datasets.disable_progress_bars()
    except Exception: pass
    import torch
    from bench import common as C
    from bench import throughput as T
    cfg = CONFIG["quick" if a.quick else "default"]
    rounds = a.rounds or cfg["rounds"]
    if a.steps:
        cfg = {**cfg, "cls": {**cfg["cls"], "steps": cfg["cls"]["warmup"] + a.steps}, "lm": {**cfg["lm"], "steps": cfg["lm"]["warmup"] + a.steps}}
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    T0 = time.time(); log = lambda s: print(s, flush=True)
    info = C.machine(); log(f"machine: {info}")
    peak = C.matmul_gflops(1024, reps=10)
    peak2 = C.matmul_gflops(2048, reps=3)
    P = max(peak["gflops_best"], peak2["gflops_best"])  # best of the timed products: the machine's capability
    C.write_csv("matmul", [peak, peak2], out)
    log(f"fp32 matmul peak: {peak['gflops_median']:.1f} GFLOP/s (1024³), {peak2['gflops_median']:.1f} (2048³), {torch.get_num_threads()} threads")
    summary_tables = []

    log("loading MiniLM + movie sentiment (tokenized once)…")
    cls = T.cls_task(cfg["cls"]["n_train"], cfg["cls"]["max_length"])
    lm = None
    if not a.no_lm and ("throughput" in a.only or "precision" in a.only or "inference" in a.only):
        log("loading SmolLM2-135M…"); lm = T.lm_task(cfg["lm"]["n_train"], cfg["lm"]["max_length"])

    if "throughput" in a.only:
        log(f"\n== training throughput: {rounds} interleaved rounds ==")
        rows = T.compare(cls, cfg["cls"], ("fit", "trainer", "bare", "fit_fused"), rounds, log)
        if lm is not None: rows += T.compare(lm, cfg["lm"], ("fit", "trainer", "bare"), rounds, log)
        C.write_csv("throughput_runs", rows, out)
        summ = T.summarize(rows)
        C.write_csv("throughput", summ, out)
        summary_tables.append(C.table(summ, ["task", "contender", "runs", "samples_per_s", "tokens_per_s", "step_ms", "cpu_ms_per_step", "setup_s", "fit_over_this", "ratio_lo", "ratio_hi", "fit_over_this_cpu"],
                                      "training throughput (median over rounds; fit_over_this = median of per-round ratios of samples/s, ratio_lo/hi its 95% interval over rounds; "
                                      "_cpu: the same from process CPU time per step, less sensitive to other load)"))

    if "precision" in a.only:
        log(f"\n== bf16 (autocast on this CPU; fp32 master weights): {rounds} interleaved rounds ==")
        bf = C.matmul_gflops(2048, dtype=torch.bfloat16, reps=3)
        P_bf16 = bf["gflops_best"]; C.write_csv("matmul_bf16", [bf], out)
        log(f"bf16 matmul peak: {bf['gflops_median']:.1f} GFLOP/s (2048³), {P_bf16 / P:.2f}x the fp32 peak")
        rows = T.compare(cls, {**cfg["cls"], "precision": "bf16"}, ("fit", "trainer", "bare"), rounds, log)
        if lm is not None: rows += T.compare(lm, {**cfg["lm"], "precision": "bf16"}, ("fit", "trainer", "bare"), rounds, log)
        # defaults vs defaults: what a user gets from fit(...) and from Trainer(...).train() with no tuning
        rows += T.compare(cls, cfg["cls"], ("fit_defaults", "trainer_defaults"), rounds, log)
        C.write_csv("precision_runs", rows, out)
        summ = T.summarize(rows)
        for r_ in summ:   # the defaults pair: fit_defaults over trainer_defaults
            if r_["contender"] == "trainer_defaults":
                fd = {x["round"]: x for x in rows if x["contender"] == "fit_defaults"}; td = {x["round"]: x for x in rows if x["contender"] == "trainer_defaults"}
                r_.update(T.fit_ratio(fd, td))
        C.write_csv("precision", summ, out)
        from bench.mfu import fit_mfu
        m16 = fit_mfu(cls, peak_gflops=P_bf16, log=log, precision="bf16", **cfg["mfu"])
        m32 = fit_mfu(cls, peak_gflops=P, log=log, precision="fp32", **cfg["mfu"])
        summary_tables.append(C.table(summ, ["task", "contender", "runs", "samples_per_s", "step_ms", "cpu_ms_per_step", "fit_over_this", "ratio_lo", "ratio_hi"],
                                      "bf16 throughput (same batches) and defaults vs defaults (fit_defaults: auto precision + length-grouped batches; "
                                      "trainer_defaults: TrainingArguments' defaults)"))
        summary_tables.append(C.table([dict(precision="bf16", peak_gflops=P_bf16, achieved_gflops=m16["fit_achieved_gflops"], mfu=m16["fit_mfu"]),
                                       dict(precision="fp32", peak_gflops=P, achieved_gflops=m32["fit_achieved_gflops"], mfu=m32["fit_mfu"])],
                                      ["precision", "peak_gflops", "achieved_gflops", "mfu"], "MFU of fit (chapter configuration) against each precision's measured matmul peak"))

    if "mfu" in a.only:
        log("\n== CPU MFU (MiniLM full fine-tuning) ==")
        from bench.mfu import breakdown, fit_mfu
        phases, acc = breakdown(cls, peak_gflops=P, log=log, **cfg["mfu"])
        acc.update(fit_mfu(cls, peak_gflops=P, log=log, **cfg["mfu"]))
        C.write_csv("mfu_phases", phases, out); C.write_csv("mfu_cpu", [acc], out)
        summary_tables.append(C.table(phases, ["phase", "ms_per_step", "share"], f"MiniLM training step, batch {acc['batch_size']}: where the time goes"))
        keys = ["peak_gflops", "achieved_gflops", "mfu", "fwd_bwd_gflops_on_padded", "fwd_bwd_efficiency_on_padded", "gemm_gflops_MxHxH",
                "gemm_gflops_MxHxI", "gemm_efficiency_model_shapes", "pad_fraction", "pad_fraction_grouped", "adamw_ms_forloop",
                "adamw_ms_foreach", "adamw_ms_fused", "tokenize_us_per_example", "train_us_per_example",
                "fit_achieved_gflops", "fit_mfu", "fit_pad_fraction"]
        summary_tables.append(C.table([dict(metric=k, value=acc.get(k)) for k in keys], ["metric", "value"], "MFU accounting"))

    if "profile" in a.only:
        log("\n== where a bf16 step goes, and torch.compile ==")
        from bench.profile_step import compile_compare, op_profile
        prow = op_profile(cls, precision="bf16", log=log, **{k: v for k, v in cfg["mfu"].items()})
        crow = [compile_compare(cls, precision=p_, log=log, **cfg["mfu"]) for p_ in ("bf16", "fp32")]
        C.write_csv("profile_step", prow, out); C.write_csv("compile", crow, out)
        summary_tables.append(C.table(prow, ["category", "ms_per_step", "share"], "MiniLM bf16 training step (batch 32, length-grouped, fused AdamW): self CPU time per op category"))
        summary_tables.append(C.table(crow, ["precision", "eager_step_ms", "compiled_step_ms", "speedup", "compile_s", "break_even_steps",
                                             "chapter_time_eager_s", "chapter_time_compiled_s", "loss0_eager", "loss0_compiled"],
                                      "torch.compile (inductor) vs eager, same batches"))

    if "inference" in a.only:
        log("\n== inference ==")
        from bench.inference import batched_generation_throughput, eval_throughput, generation_throughput
        rows = eval_throughput(cls, n=cfg["eval_n"], log=log)
        if lm is not None:
            rows += generation_throughput(lm["model"], lm["tok"], cfg["gen_tokens"], log=log)
            rows += batched_generation_throughput(lm["model"], lm["tok"], cfg["gen_tokens"], log=log)
        C.write_csv("inference", rows, out)
        summary_tables.append(C.table(rows, ["kind", "model", "variant", "n", "batch_size", "time_s", "samples_per_s", "tokens_per_s"], "inference"))

    info["total_s"] = round(time.time() - T0, 1)
    (out / "machine.json").write_text(json.dumps(info, indent=1))
    print("\n" + "\n".join(summary_tables))
    print(f"results in {out}; total {info['total_s']:.0f}s on {info['torch_threads']} threads (load {info['load1']} at start)")


if __name__ == "__main__":
    main()

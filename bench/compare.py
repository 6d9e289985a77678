"""How long does `ftlab compare`'s default plan take on a 2,000-example CSV, and how much memory does it use?

The issue's performance target (issue 35): the default plan (`--strategies standard`, 3 seeds, the default step
budget of one epoch) on a 2,000-example labelled CSV finishes in under ~20 minutes on 2 idle cores, with peak memory
under 6 GB. This script makes that CSV from the bundled movie reviews (a stratified sample, written to
bench/results/compare_2000.csv), prints the plan's own estimate (`--dry-run`), then runs the plan in a fresh process
and measures its wall time and peak resident memory.

    python -m bench.compare                # estimate, then the real run (minutes)
    python -m bench.compare --dry-run      # the plan and its estimate only (about a minute)
    python -m bench.compare --n 500        # a smaller CSV, to check that everything runs
    python -m bench.compare --sample       # on a busy machine: one run per strategy, extrapolated to idle cores (minutes)

`--sample` is for a shared, loaded machine, where wall time says more about the neighbours than about the plan: it
prepares the plan exactly as `ftlab compare` does (`ftlab.compare.prepare`: data, one feature pass, calibration), then
times ONE run of each strategy (seed 0, its first grid value, the plan's step budget) in this process, in wall seconds
and in CPU seconds of this process (`getrusage`). Run at one thread (`OMP_NUM_THREADS=1`), a run's CPU seconds are what
it would take on one idle core (contention slows the instructions, it does not add any, so this errs high); the
extrapolation is the setup's CPU seconds plus, per strategy, its runs × that run's CPU seconds (a strategy that reuses
members already trained, 0). Two idle cores at two threads take at most that. Writes bench/results/compare_sample.csv.

Writes bench/results/compare_bench.csv (one row: n, strategies, seeds, estimate, wall seconds, peak MB) and the
compare's own outputs under bench/results/compare_run/. Run it on an idle machine: the estimate is calibrated on
this machine's current speed, and a shared machine makes both numbers slower.
"""
from __future__ import annotations
import argparse, os, resource, shutil, subprocess, sys, time
from pathlib import Path

from bench import common as C


def make_csv(path: Path, n: int) -> Path:
    "A labelled CSV of `n` movie reviews (text, label as the class name), sampled stratified with seed 0."
    from ftlab.compare import load_labelled
    df, names, _ = load_labelled(dataset="sentiment/movie", n=n)
    df.assign(label=[names[y] for y in df.label])[["text", "label"]].to_csv(path, index=False)
    return path


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime


def sample(csv: Path, a, out: Path) -> int:
    "Prepare the default plan as `ftlab compare` does, time one run per strategy (wall, CPU), extrapolate the plan; one row per strategy and a total."
    import pandas as pd
    from ftlab import compare as K
    w, c = time.perf_counter(), _cpu()
    P = K.prepare(["--file", str(csv), "--strategies", a.strategies, "--seeds", str(a.seeds), "--out", str(out / "compare_run"), "--dry-run"])
    setup = dict(strategy="(setup: data, features, calibration)", runs=1, wall_s=time.perf_counter() - w, cpu_s=_cpu() - c)
    rows, pool = [setup], P["pool"]
    for r in P["plan"].itertuples():
        w, c = time.perf_counter(), _cpu(); K.run_one(r.strategy, K.REGISTRY[r.strategy].grid[0], pool, seed=0)
        one = dict(wall_s=time.perf_counter() - w, cpu_s=_cpu() - c)
        k = 0 if r.new_steps == 0 and r.steps > 0 else r.runs                        # members already trained: nothing new
        rows.append(dict(strategy=r.strategy, runs=k, steps=r.steps, **{f"{x}_per_run": v for x, v in one.items()},
                         wall_s=k * one["wall_s"], cpu_s=k * one["cpu_s"], est_s=r.est_s))
        print(f"{r.strategy:>16s}: one run {one['wall_s']:.1f}s wall, {one['cpu_s']:.1f}s CPU; × {k} runs", flush=True)
    df = pd.DataFrame(rows)
    tot = dict(strategy="TOTAL", runs=int(df.runs.iloc[1:].sum()), wall_s=df.wall_s.sum(), cpu_s=df.cpu_s.sum(), est_s=df.est_s.sum())
    df = pd.concat([df, pd.DataFrame([tot])], ignore_index=True).assign(
        n=a.n, seeds=a.seeds, threads=os.environ.get("OMP_NUM_THREADS", "default"), machine=str(C.machine()), date=time.strftime("%Y-%m-%d %H:%M"))
    df.to_csv(out / "compare_sample.csv", index=False)
    print(df.round(2).to_string(index=False))
    print(f"the plan: ≈ {tot['wall_s'] / 60:.1f} min at this load (the plan's own estimate: {tot['est_s'] / 60:.1f} min + setup); "
          f"≈ {tot['cpu_s'] / 60:.1f} min of CPU, what one idle core would take at {df.threads.iloc[0]} thread(s)")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="examples in the CSV (default 2000)")
    ap.add_argument("--strategies", default="standard")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--dry-run", action="store_true", help="print the plan's estimate only")
    ap.add_argument("--sample", action="store_true", help="time one run per strategy (wall and CPU) and extrapolate the plan to idle cores")
    ap.add_argument("--out", default=str(C.RESULTS))
    a = ap.parse_args(argv)
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"): os.environ.setdefault(k, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false"); os.environ["FTLAB_PROFILE"] = "fast"
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    csv = make_csv(out / f"compare_{a.n}.csv", a.n); run = out / "compare_run"
    cmd = [sys.executable, "-m", "ftlab.cli", "compare", "--file", str(csv), "--strategies", a.strategies, "--seeds", str(a.seeds), "--out", str(run)]
    if a.sample: return sample(csv, a, out)
    dry = subprocess.run(cmd + ["--dry-run"], capture_output=True, text=True, check=True).stdout
    print(dry)
    est = next((l for l in dry.splitlines() if l.startswith("ftlab compare:")), "")
    est_min = float(est.split("≈ ")[1].split(" min")[0]) if "≈ " in est else float("nan")
    if a.dry_run: return 0
    shutil.rmtree(run, ignore_errors=True)
    t = time.perf_counter(); subprocess.run(cmd, check=True); wall = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024   # KiB on Linux: the largest child, the compare
    import pandas as pd
    row = pd.DataFrame([dict(n=a.n, strategies=a.strategies, seeds=a.seeds, estimate_min=est_min, wall_min=round(wall / 60, 2),
                             peak_mb=round(peak_mb), threads=os.environ.get("OMP_NUM_THREADS", "default"), machine=str(C.machine()))])
    row.to_csv(out / "compare_bench.csv", index=False)
    print(row.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How long does `ftlab compare`'s default plan take on a 2,000-example CSV, and how much memory does it use?

The issue's performance target (issue 35): the default plan (`--strategies standard`, 3 seeds, the default step
budget of one epoch) on a 2,000-example labelled CSV finishes in under ~20 minutes on 2 idle cores, with peak memory
under 6 GB. This script makes that CSV from the bundled movie reviews (a stratified sample, written to
bench/results/compare_2000.csv), prints the plan's own estimate (`--dry-run`), then runs the plan in a fresh process
and measures its wall time and peak resident memory.

    python -m bench.compare                # estimate, then the real run (minutes)
    python -m bench.compare --dry-run      # the plan and its estimate only (about a minute)
    python -m bench.compare --n 500        # a smaller CSV, to check that everything runs

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


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="examples in the CSV (default 2000)")
    ap.add_argument("--strategies", default="standard")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--dry-run", action="store_true", help="print the plan's estimate only")
    ap.add_argument("--out", default=str(C.RESULTS))
    a = ap.parse_args(argv)
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"): os.environ.setdefault(k, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false"); os.environ["FTLAB_PROFILE"] = "fast"
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    csv = make_csv(out / f"compare_{a.n}.csv", a.n); run = out / "compare_run"
    cmd = [sys.executable, "-m", "ftlab.cli", "compare", "--file", str(csv), "--strategies", a.strategies, "--seeds", str(a.seeds), "--out", str(run)]
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

"Shared helpers for the benchmarks: timing, the matmul reference, CSV output and plain-text tables."
from __future__ import annotations
import csv, os, platform, statistics, time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def ratio_ci(ratios, confidence: float = 0.95):
    "Geometric mean of per-round ratios and its t-interval over rounds (on log ratios): (estimate, lo, hi); NaN bounds for one round."
    import math
    from ftlab.stats import mean_ci
    xs = [math.log(r) for r in ratios if r is not None and r > 0]
    if not xs: return float("nan"), float("nan"), float("nan")
    m = mean_ci(xs, confidence)
    return tuple(math.exp(v) for v in (m.estimate, m.lo, m.hi))


def sync(device=None):
    "Wait for queued device work (a no-op on the CPU)."
    if torch.cuda.is_available() and (device is None or str(device).startswith("cuda")): torch.cuda.synchronize()


def matmul_gflops(n: int = 1024, dtype=torch.float32, device="cpu", reps: int = 10, warmup: int = 2, inner: int = 1) -> dict:
    """Measured `torch.mm` rate for an n×n×n product: median and best GFLOP/s over `reps` timings
    (each of `inner` products), after `warmup` untimed ones. Random inputs (zeros can run faster)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    for _ in range(warmup): torch.mm(a, b)
    sync(device)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner): torch.mm(a, b)
        sync(device); ts.append((time.perf_counter() - t) / inner)
    flop = 2 * n ** 3
    return dict(n=n, dtype=str(dtype).replace("torch.", ""), device=str(device), median_s=median(ts), min_s=min(ts),
                gflops_median=flop / median(ts) / 1e9, gflops_best=flop / min(ts) / 1e9, threads=torch.get_num_threads())


def machine() -> dict:
    "A few facts about where the numbers were taken."
    try: load = os.getloadavg()[0]
    except OSError: load = float("nan")
    d = dict(host=platform.node(), cpus=os.cpu_count(), torch_threads=torch.get_num_threads(), torch=torch.__version__,
             load1=round(load, 2), time=time.strftime("%Y-%m-%d %H:%M:%S"))
    if torch.cuda.is_available(): d["gpu"] = torch.cuda.get_device_name(0)
    return d


def write_csv(name: str, rows: list[dict], results_dir: Path | None = None) -> Path:
    "Write `rows` to `results/<name>.csv` (columns: the union of the rows' keys, in first-seen order)."
    d = Path(results_dir or RESULTS); d.mkdir(parents=True, exist_ok=True)
    cols = []
    for r in rows:
        for k in r:
            if k not in cols: cols.append(k)
    p = d / f"{name}.csv"
    with open(p, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols); w.writeheader(); w.writerows(rows)
    return p


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f: return list(csv.DictReader(f))


def fmt(v):
    if isinstance(v, float):
        if v != v: return "nan"
        if abs(v) >= 1000: return f"{v:,.0f}"
        if abs(v) >= 10: return f"{v:.1f}"
        return f"{v:.3g}"
    return str(v)


def table(rows: list[dict], cols: list[str] | None = None, title: str = "") -> str:
    "A plain-text table of `rows` (list of dicts)."
    if not rows: return f"{title}\n(no rows)\n"
    cols = cols or list(rows[0])
    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    w = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    line = lambda xs: "  ".join(x.rjust(w[i]) if i else x.ljust(w[i]) for i, x in enumerate(xs))
    out = ([title] if title else []) + [line(cols), line(["-" * x for x in w])] + [line(x) for x in cells]
    return "\n".join(out) + "\n"


class Timer:
    "Accumulate wall time per named phase: `with timer('forward'): ...` (synchronises the device at the ends)."
    def __init__(self, device="cpu"): self.t, self.n, self.device = {}, {}, device
    def __call__(self, name): return _Phase(self, name)
    def ms(self): return {k: 1000 * v / max(1, self.n[k]) for k, v in self.t.items()}


class _Phase:
    def __init__(self, timer, name): self.timer, self.name = timer, name
    def __enter__(self): sync(self.timer.device); self.t0 = time.perf_counter()
    def __exit__(self, *a):
        sync(self.timer.device)
        self.timer.t[self.name] = self.timer.t.get(self.name, 0.0) + time.perf_counter() - self.t0
        self.timer.n[self.name] = self.timer.n.get(self.name, 0) + 1


def non_embedding_params(model) -> int:
    "Parameters outside the token/position/type embedding tables (the N of FLOPs ≈ 6·N·tokens)."
    emb = set()
    for m in model.modules():
        if isinstance(m, torch.nn.Embedding): emb.add(id(m.weight))
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) in seen: continue
        seen.add(id(p))
        if id(p) not in emb: n += p.numel()
    return n

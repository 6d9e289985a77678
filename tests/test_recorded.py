"""Recorded results (results/<notebook>.csv, made by `python -m ftlab.stats record`) are fresh and reproduced by CI.

(a) Each recording's code hash must equal its notebook's current one: a recording made by older code is stale.
(b) scripts/test.sh runs every notebook in the fast profile with FTLAB_RESULTS_DIR=bench/results/ci, so each
    chapter's `record` calls leave CI's own fast rows there; they must match the recording's fast rows.
"""
import os
from pathlib import Path

import pandas as pd
import pytest

from ftlab.stats import RECORD_CMD, check_fresh, load_recorded

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
CI_ROWS = Path(os.environ.get("FTLAB_RESULTS_DIR") or ROOT / "bench/results/ci")
RECORDED = sorted(p for p in RESULTS.glob("*.csv") if p.name != "claims.csv")   # claims.csv is the ledger, not a recording
KEY = ["method", "dataset", "metric", "seed"]

# How far CI's fast rows may lie from the recorded fast rows. The seeds, data and code are the same (the code hash
# says so), but another machine of the same kind (another CPU model, thread count or BLAS build) adds floating-point
# sums in another order: logits move in the last bits and the few test examples that sit on the decision boundary
# flip. A handful of flips on the fast profile's test sets (a few hundred examples) moves a metric in [0, 1] by at
# most about 0.02; a metric outside [0, 1] (a loss, a perplexity, a count) may move by 5% of its size.
REPRO_TOL = 0.02      # absolute, for metrics whose values lie in [0, 1]
REPRO_REL_TOL = 0.05  # relative, for every other metric


def tolerance(recorded: float, ci: float) -> float:
    if 0 <= recorded <= 1 and 0 <= ci <= 1: return REPRO_TOL
    return REPRO_REL_TOL * max(abs(recorded), abs(ci))


def notebook_of(csv: Path) -> Path:
    return ROOT / ("index.ipynb" if csv.stem == "index" else f"nbs/{csv.stem}.ipynb")


def recordings():
    if not RECORDED: return [pytest.param(None, marks=pytest.mark.skip(reason="no recorded results under results/ yet"))]
    return [pytest.param(p, id=p.stem) for p in RECORDED]


@pytest.mark.parametrize("csv", recordings())
def test_recording_is_fresh(csv):
    nb = notebook_of(csv)
    assert nb.exists(), f"{csv.relative_to(ROOT)} has no notebook {nb.relative_to(ROOT)}: delete the recording or restore the notebook."
    fresh, msg = check_fresh(csv.stem, RESULTS, nb)
    assert fresh, f"{csv.relative_to(ROOT)}: {msg}"


@pytest.mark.parametrize("csv", recordings())
def test_recording_has_provenance(csv):
    df = load_recorded(csv.stem, RESULTS)
    cols = ["chapter", "method", "dataset", "metric", "value", "seed", "profile", "code_hash", "command", "machine", "precision", "date", "wall_s"]
    assert not (missing := [c for c in cols if c not in df.columns]), f"{csv.name} lacks {missing}: re-record it with `{RECORD_CMD} {notebook_of(csv).relative_to(ROOT)}`."
    empty = [c for c in cols if df[c].isna().any()]
    assert not empty, f"{csv.name} has rows without {empty}: re-record it with `{RECORD_CMD} {notebook_of(csv).relative_to(ROOT)}`."


@pytest.mark.parametrize("csv", recordings())
def test_ci_reproduces_the_recorded_fast_rows(csv):
    rec = load_recorded(csv.stem, RESULTS)
    rec = rec[rec.profile == "fast"]
    if rec.empty: pytest.skip(f"{csv.name} has no fast-profile rows (recorded with --no-fast)")
    ci_csv = CI_ROWS / csv.name
    if not ci_csv.exists(): pytest.skip(f"no CI rows at {ci_csv}: scripts/test.sh writes them when it runs the notebooks")
    from ftlab.engine import resolve_precision
    here = resolve_precision()
    recorded_in = set(rec.precision.dropna().astype(str).replace({"auto": "fp32"}))   # before precision was resolved, 'auto' was fp32 on CPUs
    if recorded_in and recorded_in != {here}:
        pytest.skip(f"{csv.name} was recorded in {sorted(recorded_in)} and this machine trains in {here}: numbers are only "
                    f"comparable at one precision; re-record here, or run with FTLAB_PRECISION={sorted(recorded_in)[0]}")
    ci = pd.read_csv(ci_csv)
    ci = ci[ci.profile == "fast"].groupby(KEY, dropna=False).value.last()
    rec = rec.groupby(KEY, dropna=False).value.last()
    cmd = f"`{RECORD_CMD} {notebook_of(csv).relative_to(ROOT)} --profile medium`"
    assert set(ci.index) == set(rec.index), (f"{csv.name}: CI's fast run made rows {sorted(set(ci.index) - set(rec.index))[:5]} the "
                                             f"recording lacks and lacks {sorted(set(rec.index) - set(ci.index))[:5]}; re-record with {cmd}.")
    both = pd.DataFrame({"recorded": rec, "ci": ci.loc[rec.index]})
    both["tol"] = [tolerance(r, c) for r, c in zip(both.recorded, both.ci)]
    off = both[(both.ci - both.recorded).abs() > both.tol]
    assert off.empty, f"{csv.name}: CI's fast rows differ from the recorded ones beyond the tolerance:\n{off.to_string()}\n" \
                      f"If the difference is real (a changed dependency, a new machine kind), re-record with {cmd}."

"""Recorded results (results/<notebook>.csv, made by `python -m ftlab.stats record`) are fresh and reproduced by CI.

(a) A recording is stale when the numbers moved: made from the notebook's current code (its code hash) it is fresh; after
    a code change it stands only if CI's fast rows reproduce the recorded fast rows (issue 27), so a recording without fast
    rows must be re-recorded after any change.
(b) scripts/test.sh runs every notebook in the fast profile with FTLAB_RESULTS_DIR=bench/results/ci, so each
    chapter's `record` calls leave CI's own fast rows there; they must match the recording's fast rows.
"""
import os, warnings
from pathlib import Path

import numpy as np
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
# A chapter whose fast rows are means of *sampled* text (50, 51) can lose more than a few boundary flips: one sampled
# token that differs on another CPU changes the rest of that completion, so a whole completion's score changes. Such a
# chapter derives its own bound from its arithmetic (e.g. one changed completion out of n moves a mean reward in [-1, 1]
# by at most 2/n) and records it per row in a `repro_tol` column; the larger of the two tolerances applies.


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
    """Stale when the numbers moved. A recording made from the notebook's current code is fresh. After a code change it
    stays valid only if CI's fast rows, made from the new code, reproduce the recorded fast rows (a refactor proves itself
    numerically neutral); a recording without fast rows cannot show that and must be re-recorded."""
    nb = notebook_of(csv)
    assert nb.exists(), f"{csv.relative_to(ROOT)} has no notebook {nb.relative_to(ROOT)}: delete the recording or restore the notebook."
    fresh, msg = check_fresh(csv.stem, RESULTS, nb)
    if fresh: return
    status, why = fast_rows_verdict(csv)
    if status == "match":
        warnings.warn(f"{csv.relative_to(ROOT)}: the notebook's code changed since it was recorded, and {why}: the change is numerically neutral in the fast profile")
        return
    if status == "skip" and "no fast-profile rows" not in why:
        pytest.skip(f"{csv.relative_to(ROOT)}: {msg}; whether the numbers moved is decided by CI's fast rows: {why}")
    pytest.fail(f"{csv.relative_to(ROOT)}: {msg}" + (f" ({why})" if status == "skip" else f"\n{why}"))


@pytest.mark.parametrize("csv", recordings())
def test_recording_has_provenance(csv):
    df = load_recorded(csv.stem, RESULTS)
    cols = ["chapter", "method", "dataset", "metric", "value", "seed", "profile", "code_hash", "command", "machine", "precision", "date", "wall_s"]
    assert not (missing := [c for c in cols if c not in df.columns]), f"{csv.name} lacks {missing}: re-record it with `{RECORD_CMD} {notebook_of(csv).relative_to(ROOT)}`."
    empty = [c for c in cols if df[c].isna().any()]
    assert not empty, f"{csv.name} has rows without {empty}: re-record it with `{RECORD_CMD} {notebook_of(csv).relative_to(ROOT)}`."


def fast_rows_verdict(csv: Path) -> tuple[str, str]:
    "('match' | 'differ' | 'skip', message): whether CI's fast rows of this run reproduce the recording's fast rows."
    rec = load_recorded(csv.stem, RESULTS)
    rec = rec[rec.profile == "fast"]
    if rec.empty: return "skip", f"{csv.name} has no fast-profile rows (recorded with --no-fast)"
    ci_csv = CI_ROWS / csv.name
    if not ci_csv.exists(): return "skip", f"no CI rows at {ci_csv}: scripts/test.sh writes them when it runs the notebooks"
    from ftlab.engine import resolve_precision
    here = resolve_precision()
    recorded_in = set(rec.precision.dropna().astype(str).replace({"auto": "fp32"}))   # before precision was resolved, 'auto' was fp32 on CPUs
    if recorded_in and recorded_in != {here}:
        return "skip", (f"{csv.name} was recorded in {sorted(recorded_in)} and this machine trains in {here}: numbers are only "
                        f"comparable at one precision; re-record here, or run with FTLAB_PRECISION={sorted(recorded_in)[0]}")
    ci = pd.read_csv(ci_csv)
    ci = ci[ci.profile == "fast"].groupby(KEY, dropna=False).value.last()
    own = (rec.groupby(KEY, dropna=False).repro_tol.last() if "repro_tol" in rec.columns else None)
    rec = rec.groupby(KEY, dropna=False).value.last()
    cmd = f"`{RECORD_CMD} {notebook_of(csv).relative_to(ROOT)} --profile medium`"
    if set(ci.index) != set(rec.index):
        return "differ", (f"{csv.name}: CI's fast run made rows {sorted(set(ci.index) - set(rec.index))[:5]} the "
                          f"recording lacks and lacks {sorted(set(rec.index) - set(ci.index))[:5]}; re-record with {cmd}.")
    both = pd.DataFrame({"recorded": rec, "ci": ci.loc[rec.index]})
    both["tol"] = [tolerance(r, c) for r, c in zip(both.recorded, both.ci)]
    if own is not None: both["tol"] = np.fmax(both.tol, pd.to_numeric(own.loc[rec.index], errors="coerce").values)
    off = both[(both.ci - both.recorded).abs() > both.tol]
    if not off.empty:
        return "differ", (f"{csv.name}: CI's fast rows differ from the recorded ones beyond the tolerance:\n{off.to_string()}\n"
                          f"If the difference is real (a changed dependency, a new machine kind), re-record with {cmd}.")
    return "match", f"{csv.name}: CI's {len(both)} fast rows reproduce the recorded ones within tolerance"


@pytest.mark.parametrize("csv", recordings())
def test_ci_reproduces_the_recorded_fast_rows(csv):
    status, msg = fast_rows_verdict(csv)
    if status == "skip": pytest.skip(msg)
    assert status == "match", msg

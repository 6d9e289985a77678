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

from ftlab.stats import RECORD_CMD, check_fresh, code_hash, load_recorded

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
CI_ROWS = Path(os.environ.get("FTLAB_RESULTS_DIR") or ROOT / "bench/results/ci")
RECORDED = sorted(p for p in RESULTS.glob("*.csv") if p.name not in ("claims.csv", "neutral_changes.csv"))   # the ledger and the neutral changes are not recordings
KEY = ["method", "dataset", "metric", "seed"]

# How far CI's fast rows may lie from the recorded fast rows. The seeds, data and code are the same (the code hash
# says so), but another machine of the same kind (another CPU model, thread count or BLAS build) adds floating-point
# sums in another order: logits move in the last bits and the few test examples that sit on the decision boundary
# flip. A handful of flips on the fast profile's test sets (a few hundred examples) moves a metric in [0, 1] by at
# most about 0.02; a metric outside [0, 1] (a loss, a perplexity, a count) may move by 5% of its size.
REPRO_TOL = 0.02      # absolute, for metrics whose values lie in [0, 1]
REPRO_REL_TOL = 0.05  # relative, for every other metric
# A mean reward over sampled completions (50, 51) is neither: it may be negative or near 0, where 5% of its size is no
# tolerance at all, and its noise is not a few boundary examples. Sampling is seeded, but one token that another machine
# samples differently (logits a few ulps apart straddling the uniform draw) resamples the rest of that completion, which
# moves that prompt's reward by at most the reward's range R, so the mean over the row's n_test prompts by at most R / n_test.
# The tolerance allows one such flip per row: max(REPRO_TOL, R / n_test). Measured for 51's fast profile (fp32 sampling,
# 24 prompts): runs at 1 and at 2 threads on one machine gave identical rows and identical per-prompt rewards, so the
# allowance is for another CPU or BLAS build, not for thread counts.
SAMPLED_REWARD_RANGE = {"reward_vader": 2.0}   # metric: the range of one completion's reward (VADER's compound score is in [-1, 1])
# A chapter may also record its own bound per row in a `repro_tol` column, derived from its arithmetic (50: two changed
# completions out of n, 2 * 2/n for a reward and 2 * max_i KL_i / n for a mean KL); the largest tolerance applies.
# The KL of a policy trained on its own samples (50's PPO) is looser still: a token sampled differently in a *training*
# rollout changes that step's gradient and every rollout after it, so the whole policy moves, not one completion.
# Measured: three fast runs of 50 at 2 threads on one idle machine gave 0.446, 0.415, 0.458 nats and a 1-thread run 0.406
# (the largest gap 12% of the value); the tolerance for such a row is twice that spread.
TRAINED_ON_SAMPLES_KL_REL = 0.25
# A metric that is an affine function of a classification error ε gets the [0, 1] rule through that function: the proxy
# A-distance is 2(1 − 2ε) (ε: a domain classifier's held-out error), so REPRO_TOL on ε is 4 × REPRO_TOL on the distance.
# 60's DAPT rows need it: DAPT trains the encoder in bf16, whose sums another thread count orders differently, and two of
# the fast profile's 100 held-out domain examples flipped (1.48 → 1.56 at 1 and 2 threads) — as an accuracy, 0.02.
ERROR_SLOPE = {"proxy A-distance": 4.0}   # metric: |d metric / d ε|
# Recorded and CI values pass through decimal text (the CSVs): their difference carries a rounding error of ~1e-15.
CSV_ROUNDING = 1e-9


def tolerance(recorded: float, ci: float, metric: str = "", n_test: float = float("nan")) -> float:
    if metric in SAMPLED_REWARD_RANGE and n_test > 0: return max(REPRO_TOL, SAMPLED_REWARD_RANGE[metric] / n_test)
    if metric in ERROR_SLOPE: return ERROR_SLOPE[metric] * REPRO_TOL
    if 0 <= recorded <= 1 and 0 <= ci <= 1: return REPRO_TOL
    return REPRO_REL_TOL * max(abs(recorded), abs(ci))


def sampled_tolerance(metric: str, repro_tol: float, recorded: float, ci: float) -> float:
    "A chapter's own per-row bound (`repro_tol`, 0 when absent); a row with one and metric 'kl' also gets the measured KL rule."
    if not (np.isfinite(repro_tol) and repro_tol > 0): return 0.0
    if metric == "kl": return max(repro_tol, TRAINED_ON_SAMPLES_KL_REL * max(abs(recorded), abs(ci)))
    return float(repro_tol)


def test_tolerance_of_a_policy_trained_on_its_own_samples():
    # 50's fast KL: 0.406 recorded at one thread, 0.446 / 0.415 / 0.458 in three 2-thread runs: all within 25% of the value
    for ci in (0.446, 0.415, 0.458): assert abs(ci - 0.406) <= sampled_tolerance("kl", 0.0408, 0.406, ci)
    assert abs(0.60 - 0.406) > sampled_tolerance("kl", 0.0408, 0.406, 0.60)           # a KL half again as large is a change
    assert sampled_tolerance("reward_vader", 0.0625, 0.16, 0.17) == 0.0625          # a reward keeps the chapter's bound
    assert sampled_tolerance("kl", float("nan"), 0.4, 0.5) == 0.0                   # rows without a bound: the general rules only


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
    if fresh and code_hash(nb) in set(load_recorded(csv.stem, RESULTS).code_hash.astype(str)): return
    # fresh through changes marked numerically neutral (results/neutral_changes.csv), or stale: CI's fast rows decide
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
    n_test = rec.groupby(KEY, dropna=False).n_test.last() if "n_test" in rec else None
    rec = rec.groupby(KEY, dropna=False).value.last()
    cmd = f"`{RECORD_CMD} {notebook_of(csv).relative_to(ROOT)} --profile medium`"
    if set(ci.index) != set(rec.index):
        return "differ", (f"{csv.name}: CI's fast run made rows {sorted(set(ci.index) - set(rec.index))[:5]} the "
                          f"recording lacks and lacks {sorted(set(rec.index) - set(ci.index))[:5]}; re-record with {cmd}.")
    both = pd.DataFrame({"recorded": rec, "ci": ci.loc[rec.index]})
    both["tol"] = [tolerance(r, c, key[KEY.index("metric")], float(n_test.loc[key]) if n_test is not None else float("nan"))
                   for key, r, c in zip(both.index, both.recorded, both.ci)]
    if own is not None:   # the chapter's own bound for sampled text; a KL of a policy trained on its own samples: the measured rule
        own = pd.to_numeric(own.loc[rec.index], errors="coerce")
        both["tol"] = [max(t, sampled_tolerance(k[KEY.index("metric")], o, r, c))
                       for k, t, o, r, c in zip(both.index, both.tol, own, both.recorded, both.ci)]
    off = both[(both.ci - both.recorded).abs() > both.tol + CSV_ROUNDING]
    if not off.empty:
        return "differ", (f"{csv.name}: CI's fast rows differ from the recorded ones beyond the tolerance:\n{off.to_string()}\n"
                          f"If the difference is real (a changed dependency, a new machine kind), re-record with {cmd}.")
    return "match", f"{csv.name}: CI's {len(both)} fast rows reproduce the recorded ones within tolerance"


def test_tolerance_of_a_sampled_mean_reward():
    # one completion of 24 resampled moves a reward in [-1, 1] by up to 2/24, whatever the sign or size of the mean
    assert tolerance(-0.05, -0.04, "reward_vader", 24) == pytest.approx(2 / 24)
    assert tolerance(0.30, 0.31, "reward_vader", 400) == REPRO_TOL   # never tighter than the [0, 1] rule
    assert tolerance(0.30, 0.31) == REPRO_TOL and tolerance(5.0, 5.1) == pytest.approx(REPRO_REL_TOL * 5.1)


def test_tolerance_of_a_proxy_a_distance():
    # 2(1 - 2ε): two flips in 100 held-out domain examples (ε ± 0.02) pass, as they would for an accuracy; three do not
    t = tolerance(1.48, 1.56, "proxy A-distance")
    assert t == pytest.approx(0.08) and abs(1.56 - 1.48) <= t + CSV_ROUNDING and abs(1.60 - 1.48) > t + CSV_ROUNDING


@pytest.mark.parametrize("csv", recordings())
def test_ci_reproduces_the_recorded_fast_rows(csv):
    status, msg = fast_rows_verdict(csv)
    if status == "skip": pytest.skip(msg)
    assert status == "match", msg


def test_neutral_changes_start_from_a_recording():
    """Every line of results/neutral_changes.csv (written by scripts/mark_neutral.py) starts from a hash its chapter's
    recording was made by, or that an earlier neutral change reached, and says how it was shown neutral."""
    path = RESULTS / "neutral_changes.csv"
    if not path.exists(): pytest.skip("no code change has been marked numerically neutral")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(df.columns) == ["chapter", "from_hash", "to_hash", "date", "evidence"], list(df.columns)
    for chapter, rows in df.groupby("chapter", sort=False):
        assert (RESULTS / f"{chapter}.csv").exists(), f"neutral_changes.csv names {chapter}, which has no recording"
        known = set(load_recorded(chapter, RESULTS).code_hash.astype(str))
        for r in rows.itertuples():
            assert r.from_hash in known, f"{chapter}: a neutral change starts from {r.from_hash}, which no recording or earlier change has; re-run scripts/mark_neutral.py"
            assert r.evidence.strip() and r.from_hash != r.to_hash, r
            known.add(r.to_hash)

"Edge cases, references and bad input for ftlab.stats (the notebook nbs/02_stats shows the main path)."
import json, os, subprocess, sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from scipy import stats as sps

from ftlab.stats import (PROVENANCE, SCHEMA, Comparison, Interval, _skipped, bootstrap_ci, check_fresh, code_hash,
                         load_recorded, main_record, mcnemar, mean_ci, over_seeds, paired_bootstrap, paired_seeds, record,
                         record_notebook, results_frame, show_recorded, summarize, table)

ROOT = Path(__file__).resolve().parents[1]


def two_models(p_a, p_b, n, seed, shared=0.7):
    "Correlated right/wrong outcomes of two models on the same `n` examples."
    rng = np.random.default_rng(seed)
    u = rng.random(n); v = np.where(rng.random(n) < shared, u, rng.random(n))
    return (u < p_a).astype(float), (v < p_b).astype(float)


def rows(values, method="m", metric="accuracy", dataset="d", chapter="c"):
    return [dict(chapter=chapter, method=method, dataset=dataset, metric=metric, value=v, seed=s) for s, v in enumerate(values)]


# ---- intervals over seeds ----

@pytest.mark.parametrize("n", [2, 3, 7, 40])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_mean_ci_is_scipys_t_interval(n, confidence):
    x = np.random.default_rng(n).normal(0.8, 0.03, n)
    ci = mean_ci(x, confidence)
    lo, hi = sps.t.interval(confidence, n - 1, loc=x.mean(), scale=sps.sem(x))
    np.testing.assert_allclose([ci.estimate, ci.lo, ci.hi], [x.mean(), lo, hi], rtol=0, atol=1e-14)
    assert ci.half_width == pytest.approx((hi - lo) / 2, abs=1e-14)


def test_mean_ci_edge_cases():
    one = mean_ci(np.array([[0.7]]))  # any shape, flattened
    assert one.estimate == 0.7 and np.isnan(one.lo) and np.isnan(one.hi) and np.isnan(one.half_width)
    assert mean_ci([2, 2]) == Interval(2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="NaN"): mean_ci([0.1, float("nan")])
    with pytest.raises(ValueError, match="at least one"): mean_ci([])


def test_summarize_groups_in_order_and_survives_single_runs():
    df = pd.DataFrame(rows([0.8, 0.82, 0.84], method="b") + rows([0.7], method="a"))
    s = summarize(df)
    assert list(s.method) == ["b", "a"] and list(s.n) == [3, 1]
    assert s.loc[0, "lo"] == pytest.approx(mean_ci([0.8, 0.82, 0.84]).lo, abs=1e-14)
    assert s.loc[1, ["std", "lo", "hi", "half_width"]].isna().all()
    whole = summarize(df, by=[])
    assert len(whole) == 1 and whole.n[0] == 4
    with pytest.raises(KeyError, match="'lr'"): summarize(df, value="lr")


def test_over_seeds_accepts_dicts_rows_and_frames():
    assert over_seeds(lambda s: {"acc": s}, [3, 4]).to_dict("list") == {"seed": [3, 4], "metric": ["acc", "acc"], "value": [3, 4]}
    f = over_seeds(lambda s: pd.DataFrame([dict(method="x", value=s)]), [1, 2])
    assert f.seed.tolist() == [1, 2] and f.method.tolist() == ["x", "x"]
    with pytest.raises(TypeError, match="dict of metrics"): over_seeds(lambda s: None, [0])


# ---- one test set ----

def test_bootstrap_is_seeded_and_matches_the_normal_approximation_on_a_large_sample():
    x = np.random.default_rng(0).exponential(1.0, 400)
    assert bootstrap_ci(x, seed=5) == bootstrap_ci(x, seed=5)
    assert bootstrap_ci(x, seed=5) != bootstrap_ci(x, seed=6)
    correct = (np.random.default_rng(1).random(8000) < 0.7).astype(float); p = correct.mean()
    half = sps.norm.ppf(0.975) * np.sqrt(p * (1 - p) / correct.size)
    ci = bootstrap_ci(correct)
    assert ci.estimate == p
    np.testing.assert_allclose([ci.lo, ci.hi], [p - half, p + half], atol=0.0015)  # resampling error ≈ 0.0002 here
    assert bootstrap_ci(correct, confidence=0.99).half_width > ci.half_width


def test_bootstrap_other_statistics_and_methods():
    x = np.random.default_rng(2).normal(size=200)
    med = bootstrap_ci(x, statistic=np.median, method="BCa")
    assert med.lo < np.median(x) < med.hi and med.estimate == np.median(x)
    assert bootstrap_ci(np.zeros(20)) == Interval(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="at least 2"): bootstrap_ci([1.0])


def test_mcnemar_by_hand_and_against_scipy():
    # 25 examples only A gets right, 13 only B, 62 concordant
    a = np.r_[np.ones(25), np.zeros(13), np.ones(40), np.zeros(22)]
    b = np.r_[np.zeros(25), np.ones(13), np.ones(40), np.zeros(22)]
    ex = mcnemar(a, b)
    tail = sum(__import__("math").comb(38, k) for k in range(14)) / 2 ** 38
    assert ex.p_value == pytest.approx(2 * tail, rel=1e-12)
    assert ex.p_value == pytest.approx(sps.binomtest(25, 38).pvalue, rel=1e-14)
    chi = mcnemar(a, b, exact=False)
    assert chi.p_value == pytest.approx(sps.chi2.sf((25 - 13 - 1) ** 2 / 38, 1), rel=1e-14)
    assert ex.difference == pytest.approx(0.12, abs=1e-15)
    assert ex.details == {"only A right": 25, "only B right": 13}
    rev = mcnemar(b.astype(bool), a.astype(bool))  # booleans accepted; swapping negates the difference, keeps p
    assert rev.p_value == ex.p_value and rev.difference == -ex.difference and (rev.lo, rev.hi) == pytest.approx((-ex.hi, -ex.lo))
    with pytest.raises(ValueError, match="right/wrong"): mcnemar(a * 0.3, b)
    with pytest.raises(ValueError, match="same items"): mcnemar(a, b[:-1])


def test_paired_tests_find_a_real_difference_and_not_a_null_one():
    a, b = two_models(0.82, 0.78, 1500, seed=3)
    for test in (paired_bootstrap, mcnemar):
        c = test(a, b)
        assert c.significant and c.lo > 0, c
    nulls = [two_models(0.8, 0.8, 800, seed=100 + s) for s in range(40)]
    boot = sum(paired_bootstrap(x, y, n_resamples=2000).significant for x, y in nulls)
    mcn = sum(mcnemar(x, y).significant for x, y in nulls)
    assert boot <= 6 and mcn <= 6, (boot, mcn)  # nominal 5%: 2 of 40 expected


def test_paired_seeds_is_ttest_rel():
    a = np.array([0.71, 0.74, 0.69, 0.73]); b = np.array([0.70, 0.70, 0.68, 0.70])
    c = paired_seeds(a, b)
    res = sps.ttest_rel(a, b)
    assert c.p_value == pytest.approx(res.pvalue, rel=1e-14)
    np.testing.assert_allclose([c.lo, c.hi], list(res.confidence_interval()), atol=1e-14)
    assert c.unit == "seeds" and c.n == 4
    const = paired_seeds(a + 0.1, a)   # the same gap on every seed: no spread, so no p-value and no interval (never p = 0)
    assert np.isnan(const.p_value) and np.isnan(const.lo) and np.isnan(paired_seeds(a, a).p_value)
    assert abs(const.difference - 0.1) < 1e-12 and not const.significant
    with pytest.raises(ValueError, match="only B has"): paired_seeds(pd.Series(a), pd.Series(b, index=[0, 1, 2, 9]))


def test_comparison_says_whether_it_is_significant():
    sig = Comparison("t", 0.05, 0.01, 0.09, 0.003, 10)
    assert "significant at 0.05" in repr(sig) and "not significant" not in repr(sig) and "+0.0500" in repr(sig)
    assert "not significant at 0.05" in repr(Comparison("t", 0.01, -0.02, 0.04, 0.4, 10))
    assert "undefined" in repr(Comparison("t", 0.01, np.nan, np.nan, np.nan, 1, unit="seeds"))


# ---- schema and table ----

def test_results_frame_names_what_is_missing_or_wrong():
    with pytest.raises(ValueError, match=r"\['dataset', 'seed'\]"):
        results_frame([dict(chapter="c", method="m", metric="acc", value=1.0)])
    with pytest.raises(ValueError, match="rows \\[1\\] hold \\['n/a'\\]"):
        results_frame(rows([0.5, "n/a"]))
    df = results_frame(pd.DataFrame(rows([0.5, "0.6"])).assign(lr=0.1))
    assert list(df.columns) == list(SCHEMA) + ["lr"] and df.value.tolist() == [0.5, 0.6] and df.seed.dtype.kind == "i"
    assert df[["n_train", "command", "wall_s"]].isna().all().all()


def test_table_cells_and_layout():
    df = pd.DataFrame(rows([0.80, 0.82, 0.84], method="lora") + rows([0.5, 0.7, 0.6], method="lora", metric="loss")
                      + rows([0.9], method="full"))
    t = table(df)
    half = mean_ci([0.80, 0.82, 0.84]).half_width
    assert t.loc["lora", "accuracy"] == f"0.820 ± {half:.3f} (3 seeds)"
    assert t.loc["full", "accuracy"] == "0.900 (1 seed)" and pd.isna(t.loc["full", "loss"])
    assert list(t.index) == ["lora", "full"] and list(t.columns) == ["accuracy", "loss"]
    both = pd.concat([pd.DataFrame(rows([0.8, 0.9])).assign(profile="fast"), pd.DataFrame(rows([0.7, 0.75])).assign(profile="medium")])
    assert list(table(both, digits=2).index) == [("m", "fast"), ("m", "medium")]


# ---- recorded runs ----

def write_nb(path, sources, markdown=()):
    cells = [nbformat.v4.new_markdown_cell(m) for m in markdown] + [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


def test_code_hash_sees_code_only(tmp_path):
    p = write_nb(tmp_path / "a.ipynb", ["x = 1\ny = 2", "print(x)"], markdown=["# prose"])
    h = code_hash(p)
    nb = json.loads(p.read_text())
    nb["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "1\n"}]; nb["cells"][1]["execution_count"] = 3
    nb["cells"][0]["source"] = "# other prose"; nb["cells"][2]["source"] = "print(x)   \n\n"
    nb["cells"].append({"cell_type": "code", "source": "", "metadata": {}, "outputs": [], "execution_count": None})
    p.write_text(json.dumps(nb))
    assert code_hash(p) == h and len(h) == 12
    nb["cells"][2]["source"] = "print(y)"; p.write_text(json.dumps(nb))
    assert code_hash(p) != h


def test_skipped_cells_agree_with_the_benchmark_runner():
    bench = pytest.importorskip("bench.notebooks")
    flags = bench.skip_flags()
    for path in bench.notebooks():
        nb = json.loads(path.read_text())
        ours = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and not _skipped("".join(c["source"]), flags)]
        assert ours == bench.runnable_cells(nb, flags), path


def test_record_stamps_and_appends(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path); write_nb(tmp_path / "ch.ipynb", ["x = 1"])
    monkeypatch.setenv("FTLAB_PROFILE", "medium"); monkeypatch.delenv("FTLAB_RESULTS_DIR", raising=False)
    df = record(rows([0.8, 0.9], chapter="ignored"), "ch")
    assert set(df.chapter) == {"ch"} and set(df.profile) == {"medium"} and set(df.code_hash) == {code_hash(tmp_path / "ch.ipynb")}
    assert not list(tmp_path.glob("*.csv"))  # no results folder set: nothing written
    monkeypatch.setenv("FTLAB_RESULTS_DIR", str(tmp_path / "out"))
    record(rows([0.8, 0.9]), "ch"); record(rows([0.7]), "ch")
    on_disk = pd.read_csv(tmp_path / "out/ch.csv")
    assert on_disk.value.tolist() == [0.8, 0.9, 0.7] and list(on_disk.columns) == list(SCHEMA)
    assert record(rows([0.1]), "nowhere").code_hash.isna().all()  # no notebook found: no hash, no crash
    with pytest.raises(ValueError, match="'metric'"): record([dict(method="m", dataset="d", value=1, seed=0)], "ch")


TINY = ["from ftlab.engine import by_profile\nfrom ftlab.stats import record",
        "#| slow\nraise RuntimeError('a slow cell must not run')",
        "rows = [dict(method=m, dataset='toy', metric='accuracy', value=by_profile(0.5, 0.9, medium=0.7), seed=s, n_test=by_profile(10, 99, medium=50))\n"
        "        for m in ('a', 'b') for s in range(2)]",
        "record(rows, 'tiny')"]


def test_record_notebook_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FTLAB_PRECISION", "fp32")
    nb = write_nb(tmp_path / "tiny.ipynb", TINY, markdown=["# Tiny"]); before = nb.read_bytes()
    assert main_record(["record", str(nb), "--out", str(tmp_path / "results")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert nb.read_bytes() == before
    df = load_recorded("tiny", tmp_path / "results")
    assert df.profile.tolist() == ["medium"] * 4 + ["fast"] * 4
    assert df.groupby("profile", sort=False).value.first().to_dict() == {"medium": 0.7, "fast": 0.5}
    assert df.groupby("profile", sort=False).n_test.first().to_dict() == {"medium": 50, "fast": 10}
    assert df[list(PROVENANCE)].notna().all().all() and set(df.precision) == {"fp32"} and (df.wall_s > 0).all()
    assert set(df.code_hash) == {code_hash(nb)} and df.command[0].endswith("tiny.ipynb --profile medium")
    assert "torch" in df.machine[0] and os.uname().nodename not in df.machine[0]
    assert pd.Timestamp(df.date[0]).tzname() == "UTC"
    fresh, msg = check_fresh("tiny", tmp_path / "results", nb)
    assert fresh, msg
    show_recorded("tiny", results_dir=tmp_path / "results", notebook=nb)
    out = capsys.readouterr().out
    assert "Fresh" in out and "0.700 ± " in out and "(2 seeds)" in out
    show_recorded("tiny", profile="full", results_dir=tmp_path / "results", notebook=nb)
    assert "no full-profile rows" in capsys.readouterr().out
    edited = json.loads(nb.read_text()); edited["cells"][3]["source"] = "".join(edited["cells"][3]["source"]).replace("0.7", "0.75")
    nb.write_text(json.dumps(edited))
    fresh, msg = check_fresh("tiny", tmp_path / "results", nb)
    assert not fresh and "STALE" in msg and "--profile medium" in msg


def test_record_notebook_failures(tmp_path):
    broken = write_nb(tmp_path / "broken.ipynb", ["raise ValueError('boom')"])
    with pytest.raises(RuntimeError, match="broken.ipynb failed in the fast profile.*boom"):
        record_notebook(broken, profile="fast", out_dir=tmp_path)
    silent = write_nb(tmp_path / "silent.ipynb", ["x = 1"])
    with pytest.raises(ValueError, match="called `record` nowhere"):
        record_notebook(silent, profile="fast", out_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no notebook"): record_notebook(tmp_path / "nope.ipynb")
    assert not list(tmp_path.glob("*.csv"))


# --- issue 28: `ftlab record` on something that is not a notebook: one line, exit 2, no kernel started ----------------------
MALFORMED = {"not_json": ("x.ipynb", b"not json", "it is not valid JSON"), "json_without_cells": ("x.ipynb", b'{"metadata": {}}', "no list of cells"),
             "json_list": ("x.ipynb", b"[1, 2]", "no list of cells"), "no_nbformat": ("x.ipynb", b'{"cells": [{"cell_type": "code"}]}', "no nbformat version"),
             "bad_cell": ("x.ipynb", b'{"cells": [{"cell_type": "code"}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}', "is not a valid notebook"),
             "not_utf8": ("x.ipynb", b"\xff\xfe\x00", "not UTF-8"), "csv": ("data.csv", b"text,label\nx,1\n", "not a notebook (.ipynb), it is a .csv"),
             "missing": ("nope.ipynb", None, "no notebook at"), "directory": ("folder.ipynb", "dir", "is a directory")}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_record_refuses_what_is_not_a_notebook(tmp_path, capsys, monkeypatch, case):
    import ftlab.recording as R
    from ftlab.cli import main
    name, content, needle = MALFORMED[case]
    p = tmp_path / name
    if content == "dir": p.mkdir()
    elif content is not None: p.write_bytes(content)
    monkeypatch.setattr(R, "_run_notebook", lambda *a, **k: pytest.fail("a kernel was started for a malformed notebook"))   # where record_notebook looks it up
    assert main(["record", str(p), "--out", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and "unexpected error" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "results").exists()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(["cells", "metadata", "nbformat", "source", "cell_type", "x"]), kids, max_size=4),
                        max_leaves=12))
def test_record_refuses_any_json_that_is_not_a_notebook(tmp_path, doc):
    "Any JSON document that is not a valid notebook is a ValueError before a kernel starts, never a TypeError or AttributeError."
    from ftlab.stats import _check_notebook
    p = tmp_path / "any.ipynb"; p.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="not a notebook|not a valid notebook"): _check_notebook(p, p.name)


def test_python_dash_m_record_is_one_line(tmp_path):
    "`python -m ftlab.stats record` goes through the command's error handling: one line, exit status 2."
    p = tmp_path / "x.ipynb"; p.write_text('{"metadata": {}}')
    r = subprocess.run([sys.executable, "-m", "ftlab.stats", "record", str(p)], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and "no list of cells" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_missing_recordings_say_how_to_make_them(tmp_path, capsys):
    show_recorded("nothing_here", results_dir=tmp_path)
    assert "python -m ftlab.stats record nbs/nothing_here.ipynb --profile medium" in capsys.readouterr().out
    fresh, msg = check_fresh("nothing_here", tmp_path)
    assert not fresh and "does not exist" in msg
    with pytest.raises(FileNotFoundError, match="Record them with"): load_recorded("nothing_here", tmp_path)


def test_module_runs_as_the_record_command():
    r = subprocess.run([sys.executable, "-m", "ftlab.stats", "record", "--help"], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and "--profile" in r.stdout and "--no-fast" in r.stdout, r.stderr


def test_bench_ratio_interval_is_a_t_interval_on_log_ratios():
    import math
    import scipy.stats as sps
    from bench.common import ratio_ci
    r = [1.09, 0.81, 0.81, 1.10, 0.95]
    est, lo, hi = ratio_ci(r)
    x = np.log(r); l, h = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    np.testing.assert_allclose([est, lo, hi], [math.exp(x.mean()), math.exp(l), math.exp(h)], rtol=1e-12)
    assert lo < 1 < hi                                     # parity: the interval includes 1
    assert all(math.isnan(v) for v in ratio_ci([1.2])[1:])  # one round: no interval

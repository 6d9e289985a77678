"""`ftlab compare` (nbs/91_compare.ipynb) on a CSV the tests make: the four outputs with intervals, tiers and costs;
bad input refused before any compute; `--budget` trims the plan and says what it dropped; `--resume` redoes nothing finished."""
import re

import numpy as np
import pandas as pd
import pytest

import ftlab.compare as C
from ftlab.stats import REQUIRED

POS, NEG = ["great", "superb"], ["dull", "awful"]
FILLER = "the film plot actors story scenes music ending was quite really a".split()


def reviews(n=90, seed=0) -> pd.DataFrame:
    "Short reviews whose string label follows from one cue word among neutral ones (TF-IDF separates them; the majority class cannot)."
    rng = np.random.default_rng(seed)
    return pd.DataFrame([(" ".join(list(rng.choice(FILLER, 4)) + [rng.choice(POS if y else NEG)]), "pos" if y else "neg")
                         for y in rng.integers(0, 2, n)], columns=["text", "label"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    "A 2-layer, 32-wide random BERT saved with the bundled encoder's tokenizer: the real code path in seconds."
    from transformers import AutoTokenizer
    from ftlab.assets import model_path
    from ftlab.testing import tiny_bert
    d = tmp_path_factory.mktemp("tiny")
    tok = AutoTokenizer.from_pretrained(model_path("encoder")); tiny_bert(vocab_size=tok.vocab_size).save_pretrained(d); tok.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "tiny.csv"; reviews().to_csv(p, index=False); return p


def _argv(csv, tiny, out, *more, strategies="majority,tfidf,knn,probe,head,lora"):
    return ["--file", str(csv), "--model", tiny, "--strategies", strategies, "--seeds", "3", "--steps", "3",
            "--max-length", "32", "--batch-size", "16", "--out", str(out), *more]


@pytest.fixture(scope="module")
def done(csv, tiny, tmp_path_factory):
    "One finished compare of six strategies (baselines, features, head, LoRA), three seeds."
    out = tmp_path_factory.mktemp("cmp") / "out"
    assert C.compare_main(_argv(csv, tiny, out)) == 0
    return out


def test_four_outputs_with_intervals_tiers_and_costs(done):
    rows = pd.read_csv(done / "leaderboard.csv")
    assert set(REQUIRED) <= set(rows.columns) and {"train_s", "trainable_params", "peak_mem_mb", "infer_ms", "steps"} <= set(rows.columns)
    assert sorted(rows.metric.unique()) == ["accuracy", "macro_f1"] and len(rows) == 6 * 3 * 2
    assert rows.groupby(["method", "metric"]).seed.nunique().eq(3).all()           # every strategy, every seed
    assert rows.command.str.startswith("ftlab compare --file").all() and rows.machine.notna().all() and rows.date.notna().all()
    assert (rows[rows.method.isin(["head", "lora"])].steps == 3).all()             # the common step budget
    assert rows.loc[rows.method == "majority", "trainable_params"].eq(0).all() and rows.loc[rows.method == "lora", "trainable_params"].gt(0).all()
    acc = rows[rows.metric == "accuracy"].groupby("method").value.mean()
    assert acc["tfidf"] >= 0.85 and acc["tfidf"] > acc["majority"] + 0.25         # the cue word is found; the majority rate is ~0.5
    md = (done / "leaderboard.md").read_text()
    assert "accuracy (95% CI)" in md and "p (Holm)" in md and "3 optimizer steps" in md and "±0.02" in md and "one shared pass" in md
    line = next(l for l in md.splitlines() if "| majority" in l)
    assert "worse" in line, md                                                     # paired vs the best, Holm-corrected: shown worse
    html = (done / "report.html").read_text()
    assert "data:image/png;base64," in html and "<script" not in html and "http" not in html.replace("http-equiv", "")
    assert (done / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_redoes_only_unfinished_runs(done, csv, tiny, capsys, monkeypatch):
    runs = done / C.RUNS; lines = runs.read_text().splitlines(); before = pd.read_csv(done / "leaderboard.csv")
    runs.write_text("\n".join(lines[:-3]) + "\n")                                # a kill after all but the last 3 runs
    calls = []
    real = C.run_one
    monkeypatch.setattr(C, "run_one", lambda *a, **k: calls.append(a[:1]) or real(*a, **k))
    assert C.compare_main(_argv(csv, tiny, done, "--resume")) == 0
    assert len(calls) == 3 and "resuming: " in capsys.readouterr().out
    assert len(runs.read_text().splitlines()) == len(lines)
    after = pd.read_csv(done / "leaderboard.csv")
    keep = ~before.method.isin(["lora"])                                          # the redone runs were LoRA's; the rest is read back
    pd.testing.assert_series_equal(before[keep].value, after[keep].value)


def test_existing_results_are_not_overwritten_or_mixed(done, csv, tiny):
    with pytest.raises(ValueError, match="pass --resume"): C.compare_main(_argv(csv, tiny, done))
    with pytest.raises(ValueError, match="other settings"): C.compare_main(_argv(csv, tiny, done, "--resume", "--max-length", "24"))


@pytest.mark.parametrize("table, needle", [
    (pd.DataFrame(dict(text=["a film"] * 20, label=["pos"] * 20)), "only one class"),
    (pd.DataFrame(dict(text=["a film"] * 20, label=[0.5, 1.5] * 10)), "must be all integers or all strings"),
    (pd.DataFrame(dict(review=["a film"] * 20, label=[0, 1] * 10)), "no column 'text'"),
    (pd.DataFrame(dict(text=["a film", " "] * 10, label=[0, 1] * 10)), "empty or non-text"),
    (pd.DataFrame(dict(text=["a film"] * 6, label=[0, 1] * 3)), "at least 10 labelled rows")])
def test_bad_file_is_refused_before_any_compute(tmp_path, table, needle, monkeypatch):
    "The checks and messages of `ftlab train` (ftlab.cli.validate_labelled), before a tokenizer or model is loaded."
    monkeypatch.setattr(C, "make_pool", lambda *a, **k: pytest.fail("compute started on bad input"))
    p = tmp_path / "bad.csv"; table.to_csv(p, index=False)
    with pytest.raises(ValueError, match=needle): C.compare_main(["--file", str(p), "--out", str(tmp_path / "out")])
    with pytest.raises(FileNotFoundError, match="no such file"): C.compare_main(["--file", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_bad_arguments_say_what_to_do(csv, tmp_path):
    with pytest.raises(ValueError, match="Did you mean 'lora'"): C.compare_main(["--file", str(csv), "--strategies", "head,lorra"])
    with pytest.raises(ValueError, match="e.g. 90s"): C.compare_main(["--file", str(csv), "--budget", "soon", "--dry-run", "--strategies", "majority"])
    with pytest.raises(ValueError, match="--seeds must be at least 1"): C.compare_main(["--file", str(csv), "--seeds", "0"])
    assert C.select_strategies("standard")[:4] == ["majority", "tfidf", "knn", "probe"] and set(C.select_strategies("all", target=True)) == set(C.REGISTRY)


def test_default_plan_counts_its_runs_and_steps(tiny, tmp_path, capsys):
    "The default plan on a 2,000-example CSV: standard preset (9 strategies without --target), 3 seeds, one epoch (44 steps of 32): its runs and steps counted."
    p = tmp_path / "big.csv"; reviews(2000, seed=1).to_csv(p, index=False)
    assert C.compare_main(["--file", str(p), "--model", tiny, "--max-length", "16", "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "9 strategies × 3 seeds" in text and "2000 examples" in text and "44 steps of batch 32" in text, text
    # runs: majority 1 + 2, the 8 others 2 grid values + 2; steps: head, lora, full, discriminative, gradual: 4 runs × 44
    assert "plan: 35 runs, 880 optimizer steps ≈ " in text and "s per step" in text and "spent tokenizing, embedding and calibrating" in text, text
    pool = C.Pool(reviews(90).assign(label=lambda d: (d.label == "pos").astype(int)), ["neg", "pos"], None, None, "encoder", steps=10, batch_size=16)
    one, _ = C.plan(["full", "ensemble", "soup", "tapt", "dann"], 3, pool, dict(load_s=0.0, step_s=1.0))
    assert one.steps.tolist() == [10, 30, 30, 2 + 20, 10] and one.new_steps.tolist() == [40, 120, 0, 88, 40]   # the soup reuses the ensemble's members
    two, _ = C.plan(["full", "ensemble", "soup", "tapt", "dann"], 3, pool, dict(load_s=0.0, step_s=2.0))
    trained = one.new_steps > 0
    np.testing.assert_allclose(two.est_s[trained], 2 * one.est_s[trained])    # the estimate is counted work × the measured seconds per step


def test_one_progress_bar_counts_the_plan_steps(csv, tiny, tmp_path, capsys):
    "One bar over the whole run, in optimizer steps: it ticks inside the fits and ends exactly at the plan's count."
    df, names, _ = C.load_labelled(csv)
    pool = C.make_pool(df, names, tiny, 32, 3, 16)
    strategies = ["majority", "head", "full", "ensemble", "soup", "tapt"]
    counted, _ = C.plan(strategies, 2, pool, dict(load_s=0.0, step_s=1.0))
    runs = C.run_plan(strategies, 2, pool, tmp_path)
    prog = runs.attrs["progress"]
    assert prog["total"] == counted.new_steps.sum() == 3 * 3 + 3 * 3 + 3 * 9 + 0 + 3 * (1 + 2 * 3) and prog["n"] == prog["total"], prog
    assert 0 < prog["ticked"] <= prog["total"] and pool.callbacks == []        # steps seen inside the fits; the bar leaves nothing behind
    err = capsys.readouterr().err
    assert f"{prog['total']}/{prog['total']}" in err and err.count("compare:") >= 1, err[-500:]


def test_budget_trims_the_plan_and_says_what_it_dropped(csv, tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert C.compare_main(_argv(csv, tiny, out, "--budget", "9.6s", "--dry-run", strategies="majority,tfidf,full,lora")) == 0
    text = capsys.readouterr().out
    assert "plan:" in text and "min here" in text and "dropped full, lora" in text, text
    assert not (out / C.RUNS).exists()                                             # a dry run trains nothing
    with pytest.raises(ValueError, match="leaves no strategy"): C.compare_main(_argv(csv, tiny, out, "--budget", "0s", "--dry-run", strategies="majority"))


def test_bundled_dataset_baselines(tiny, tmp_path):
    "A bundled dataset is pooled, subsampled (--n) and re-split per seed like a file."
    assert C.compare_main(["--dataset", "sentiment/movie", "--n", "120", "--model", tiny, "--strategies", "majority,tfidf",
                           "--seeds", "3", "--max-length", "32", "--out", str(tmp_path / "o")]) == 0
    rows = pd.read_csv(tmp_path / "o" / "leaderboard.csv")
    assert set(rows.dataset) == {"sentiment/movie"} and rows.n_train.between(80, 88).all() and len(rows) == 12


def test_tiers_from_known_gaps():
    "Worse (gap shown, Holm), tied (TOST within the margin), not separated (the seeds cannot tell)."
    rng = np.random.default_rng(0); a = 0.8 + rng.normal(0, 0.01, 5)
    acc = dict(a=a, b=a - 0.1 + rng.normal(0, 0.01, 5), c=a + np.array([.004, -.003, .002, -.004, -.001]),
               d=a - 0.01 + np.array([.05, -.05, .04, -.04, 0]))
    rows = pd.DataFrame([dict(method=m, dataset="toy", metric=k, value=v, seed=i, profile="fast", tuned_knob="lr", tuned_value=1e-3,
                              train_s=1.0, trainable_params=10, peak_mem_mb=1.0, infer_ms=0.1, steps=5)
                         for m, vals in acc.items() for i, v in enumerate(vals) for k in ("accuracy", "macro_f1")])
    lb = C.leaderboard(rows, margin=0.02)
    assert dict(zip(lb.strategy, lb.tier)) == dict(a="best", b="worse", c="tied with the best", d="not separated")
    assert lb.p_holm.iloc[1:].notna().all() and (lb.lo <= lb.accuracy).all() and (lb.accuracy <= lb.hi).all()
    assert C.leaderboard(rows[rows.seed < 2], margin=0.02).tier.iloc[1:].eq("undetermined").all()   # 2 seeds: no interval, no tier


def test_target_is_scored_out_of_domain(csv, tiny, tmp_path):
    "--target: shifted data with the same classes, never trained on; a second leaderboard, refused before compute if its classes differ."
    shifted = reviews(40, seed=3).assign(text=lambda d: d.text.str.replace("film", "phone").str.replace("actors", "battery"))
    tp = tmp_path / "shifted.jsonl"; shifted.to_json(tp, orient="records", lines=True)
    out = tmp_path / "o"
    assert C.compare_main(_argv(csv, tiny, out, "--target", str(tp), strategies="majority,tfidf")) == 0
    rows = pd.read_csv(out / "leaderboard.csv")
    assert set(rows.dataset) == {str(csv), str(tp)} and len(rows[rows.dataset == str(tp)]) == 2 * 3 * 2
    assert rows[(rows.dataset == str(tp)) & (rows.method == "tfidf") & (rows.metric == "accuracy")].value.mean() >= 0.8
    assert "Out of domain" in (out / "leaderboard.md").read_text()
    bad = tmp_path / "bad.csv"; shifted.assign(label="meh").iloc[:20].to_csv(bad, index=False)
    bad.write_text(bad.read_text() + "a film,pos\n")
    with pytest.raises(ValueError, match=r"classes \['meh'\]"): C.compare_main(_argv(csv, tiny, tmp_path / "o2", "--target", str(bad)))
    assert not (tmp_path / "o2").exists()


def test_later_chapters_strategies_share_their_work(csv, tiny, tmp_path, monkeypatch):
    "Ensemble, uniform and greedy soup (one set of members per seed and rate), TAPT on --unlabelled text, TTT-NN on the head: costs and FLOPs say what each spent."
    txt = tmp_path / "more.txt"; txt.write_text("\n".join(reviews(30, seed=5).text) + "\n")
    trained = []; real = C._train_members
    monkeypatch.setattr(C, "_train_members", lambda *a: trained.append((a[3], a[0])) or real(*a))
    out = tmp_path / "o"
    assert C.compare_main(_argv(csv, tiny, out, "--unlabelled", str(txt), strategies="majority,ensemble,soup,greedy_soup,tapt,ttt_nn")) == 0
    rows = pd.read_csv(out / "leaderboard.csv"); acc = rows[rows.metric == "accuracy"]
    assert set(acc.method) == {"majority", "ensemble", "soup", "greedy_soup", "tapt", "ttt_nn"} and acc.groupby("method").seed.nunique().eq(3).all()
    runs = pd.read_csv(out / C.RUNS); members = runs[runs.strategy.isin(["ensemble", "soup", "greedy_soup"])]
    assert len(trained) == len(set(zip(members.seed, members.value))) < len(members)      # each (seed, rate) trained once, shared
    assert len(trained) == 2 + 2 and members[members.seed > 0].value.nunique() == 1        # the grid on seed 0, then one shared rate for seeds 1, 2
    m = acc.groupby("method")[["steps", "trainable_params", "train_flops", "infer_flops"]].mean()
    assert m.loc["ensemble", "steps"] == 3 * 3 and m.loc["soup", "trainable_params"] == m.loc["ensemble", "trainable_params"]
    assert m.loc["ensemble", "infer_flops"] == pytest.approx(3 * m.loc["soup", "infer_flops"]) and m.loc["majority", "train_flops"] == 0
    assert m.loc["tapt", "steps"] > 3 and (m.drop("majority").train_flops > 0).all()   # masked-LM steps, then the 3 fine-tuning steps
    md = (out / "leaderboard.md").read_text()
    assert "Pareto" in md and "train FLOPs" in md and "30 unlabelled texts" in md and "3 members" in md
    with pytest.raises(ValueError, match="add 'tapt'"): C.compare_main(_argv(csv, tiny, tmp_path / "o2", "--unlabelled", str(txt), strategies="majority"))
    with pytest.raises(FileNotFoundError, match="no such file"): C.compare_main(_argv(csv, tiny, tmp_path / "o3", "--unlabelled", str(tmp_path / "nope.txt")))


def test_target_enables_domain_adaptation(csv, tiny, tmp_path, monkeypatch):
    "--target adds chapter 60's methods, trained on the target texts (never their labels); without --target they are refused before compute."
    shifted = reviews(40, seed=3).assign(text=lambda d: d.text.str.replace("film", "phone"))
    tp = tmp_path / "shifted.csv"; shifted.to_csv(tp, index=False)
    out = tmp_path / "o"
    assert C.compare_main(_argv(csv, tiny, out, "--target", str(tp), strategies="majority,dann,dapt")) == 0
    rows = pd.read_csv(out / "leaderboard.csv")
    assert set(rows[rows.dataset == str(tp)].method) == {"majority", "dann", "dapt"} and "transductive" in (out / "leaderboard.md").read_text()
    assert "dann" in C.select_strategies("standard", target=True) and "dann" not in C.select_strategies("standard")
    monkeypatch.setattr(C, "make_pool", lambda *a, **k: pytest.fail("compute started"))
    with pytest.raises(ValueError, match="give --target"): C.compare_main(_argv(csv, tiny, tmp_path / "o2", strategies="full,coral"))


def test_importance_weighted_validation_chooses_the_domain_knobs(csv, tiny, tmp_path):
    "With --target, the domain strategies choose their penalty weight or clip by importance-weighted validation accuracy (no target label); the ESS is reported."
    from ftlab.domain import effective_sample_size, validation_weights
    assert C.iw_accuracy([1, 0, 1], [2, 1, 1]) == pytest.approx(3 / 4) and effective_sample_size([2, 1, 1]) == pytest.approx(16 / 6)   # by hand
    shifted = reviews(40, seed=3).assign(text=lambda d: d.text.str.replace("film", "phone"))
    tp = tmp_path / "shifted.csv"; shifted.to_csv(tp, index=False)
    out = tmp_path / "o"
    assert C.compare_main(_argv(csv, tiny, out, "--target", str(tp), strategies="majority,coral,reweight")) == 0
    runs = pd.read_csv(out / C.RUNS)
    for s in ("coral", "reweight"):                                                # the chosen grid value: the best IW validation accuracy
        tune = runs[(runs.strategy == s) & (runs.phase == "tune")]
        assert tune.knob.eq("weight" if s == "coral" else "clip").all() and len(tune) == 2
        assert runs[(runs.strategy == s) & (runs.seed > 0)].value.eq(tune.value.iloc[tune.iw_val_accuracy.to_numpy().argmax()]).all()
    # by hand on seed 0: the majority class's validation rows, weighted as chapter 60 weights them
    df, names, _ = C.load_labelled(csv); df, _ = C.with_target(df, names, str(tp))
    f = C.make_pool(df, names, tiny, 32, 3, 16).feats["mean"].numpy(); sp = C.seed_split(df, 0); y = df.label.to_numpy()
    w = validation_weights(f[sp["train"]], f[sp["target"]], f[sp["validation"]], clip=20.0)
    right = y[sp["validation"]] == np.bincount(y[sp["train"]]).argmax()
    row = runs[(runs.strategy == "majority") & (runs.seed == 0)].iloc[0]
    assert row.iw_val_accuracy == pytest.approx((w * right).sum() / w.sum()) and row.iw_ess == pytest.approx(w.sum() ** 2 / (w ** 2).sum(), abs=1e-3)
    md = (out / "leaderboard.md").read_text()
    line = next(l for l in md.splitlines() if "| coral" in l)
    assert "(IW)" in line and f"of {len(sp['validation'])}" in line and "IW ESS" in md and "importance-weighted validation" in md, md


def test_budget_by_time_gives_each_strategy_its_steps(csv, tiny, tmp_path, capsys):
    "--budget-by time: the common wall-clock turned into each strategy's steps (measured for LoRA; shared by the members; capped for the head)."
    assert C.compare_main(_argv(csv, tiny, tmp_path / "o", "--budget-by", "time", "--dry-run", strategies="majority,head,full,lora,ensemble")) == 0
    text = capsys.readouterr().out
    steps = dict(re.findall(r"(\w+) (\d+)", text.split("--budget-by time: ")[1].split("\n")[0].split("steps: ")[1]))
    assert steps["full"] == "3" and steps["head"] == "30" and steps["ensemble"] == "1" and int(steps["lora"]) >= 1, text
    assert "majority" not in steps and "(or their time)" in text


def test_show_leaderboard_links_each_strategy_to_its_chapter(done):
    md = C.show_leaderboard(done).data
    assert "[probe](10_concepts.ipynb)" in md and "[lora](30_full_finetune.ipynb)" in md and "| tfidf " in md and "Pareto" in md


def test_recorded_leaderboard_has_provenance_and_every_seed():
    "The committed leaderboard (results/compare/sentiment_movie): every counted run's command, machine, date; 5 seeds per strategy; both domains."
    from pathlib import Path
    d = Path(__file__).resolve().parents[1] / "results/compare/sentiment_movie"
    rows = pd.read_csv(d / "leaderboard.csv")
    assert rows.command.str.startswith("ftlab compare --dataset sentiment/movie").all() and rows.machine.notna().all() and rows.date.notna().all()
    assert set(rows.dataset) == {"sentiment/movie", "sentiment/product"} and rows.groupby(["dataset", "method", "metric"]).seed.nunique().eq(5).all()
    runs = pd.read_csv(d / C.RUNS)
    assert runs.fingerprint.nunique() == 1 and set(rows.method) <= set(runs.strategy)

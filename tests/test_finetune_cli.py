"""`ftlab train` / `ftlab compare`: bad input gives a clear error, exit status 2 and writes nothing; good input trains and saves."""
import json, os, re, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ftlab.cli import main

ROWS = [("a wonderful, moving film", "pos"), ("dull and far too long", "neg"), ("a joy from start to finish", "pos"),
        ("the plot makes no sense", "neg"), ("sharp, funny and warm", "pos"), ("a tedious mess", "neg")] * 4


def _csv(tmp_path, name="data.csv", **cols):
    df = pd.DataFrame(cols or dict(text=[t for t, _ in ROWS], label=[y for _, y in ROWS]))
    p = tmp_path / name; df.to_csv(p, index=False); return p


def _jsonl(tmp_path, records, name="data.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(json.dumps(r) for r in records) + "\n"); return p


def _fails(capsys, argv, *needles):
    "Run `ftlab <argv>` in-process; assert exit 2, every needle in stderr, and no --out directory."
    assert main(argv) == 2
    err = capsys.readouterr().err
    for n in needles: assert n in err, err
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
    if out is not None: assert not out.exists(), f"{out} was created"
    return err


def test_missing_file(tmp_path, capsys):
    _fails(capsys, ["train", "--file", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "run")], "no such file", "nope.csv")


def test_unsupported_file_type(tmp_path, capsys):
    p = tmp_path / "data.txt"; p.write_text("text,label\nx,1\n")
    _fails(capsys, ["train", "--file", str(p), "--out", str(tmp_path / "run")], "unsupported file type '.txt'")


def test_empty_file(tmp_path, capsys):
    p = tmp_path / "empty.csv"; p.write_text("")
    _fails(capsys, ["train", "--file", str(p), "--out", str(tmp_path / "run")], "could not read")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_not_utf8(tmp_path, capsys, suffix):
    p = tmp_path / f"latin1{suffix}"
    rows = "text,label\nun film très émouvant,pos\n" if suffix == ".csv" else '{"text": "très émouvant", "label": "pos"}\n'
    p.write_bytes(rows.encode("latin-1"))
    _fails(capsys, ["train", "--file", str(p), "--out", str(tmp_path / "run")], "is not UTF-8", "offset", "iconv")


def test_missing_columns(tmp_path, capsys):
    p = _csv(tmp_path, review=[t for t, _ in ROWS], stars=[y for _, y in ROWS])
    err = _fails(capsys, ["train", "--file", str(p), "--out", str(tmp_path / "run")], "no column 'text' or 'label'", "--text-col")
    assert "'review'" in err and "'stars'" in err          # the message lists the columns that are there
    _fails(capsys, ["train", "--file", str(p), "--text-col", "review", "--out", str(tmp_path / "run")], "no column 'label'")


def test_float_labels(tmp_path, capsys):
    p = _csv(tmp_path, text=[t for t, _ in ROWS], label=[0.5, 1.5] * 12)
    _fails(capsys, ["train", "--file", str(p), "--out", str(tmp_path / "run")], "must be all integers or all strings", "0.5")


def test_true_false_labels_are_two_classes(tmp_path):
    "A true/false label column (CSV True/False, JSON true/false) is two classes named 'false' and 'true'."
    from ftlab.cli import read_table, validate_labelled
    want = [int(y == "pos") for _, y in ROWS]
    df = read_table(_csv(tmp_path, text=[t for t, _ in ROWS], label=[y == "pos" for _, y in ROWS]))
    assert df["label"].dtype == bool
    out, names = validate_labelled(df)
    assert names == ["false", "true"] and out.label.tolist() == want
    out2, names2 = validate_labelled(read_table(_jsonl(tmp_path, [dict(text=t, label=y == "pos") for t, y in ROWS])))
    assert names2 == names and out2.label.tolist() == want
    mixed = pd.DataFrame(dict(text=[t for t, _ in ROWS], label=[True, 0] * 12))
    with pytest.raises(ValueError, match="must be all integers or all strings"): validate_labelled(mixed)


def test_mixed_int_and_string_labels(tmp_path, capsys):
    p = _jsonl(tmp_path, [dict(text=t, label=(1 if i % 2 else "neg")) for i, (t, _) in enumerate(ROWS)])
    _fails(capsys, ["train", "--file", str(p), "--out", str(tmp_path / "run")], "must be all integers or all strings")


def test_missing_label_values(tmp_path, capsys):
    p = _jsonl(tmp_path, [dict(text=t, label=None if i == 3 else y) for i, (t, y) in enumerate(ROWS)])
    _fails(capsys, ["train", "--file", str(p), "--out", str(tmp_path / "run")], "have no 'label'", "row 3")


def test_one_class_only(tmp_path, capsys):
    p = _csv(tmp_path, text=[t for t, _ in ROWS], label=["pos"] * len(ROWS))
    _fails(capsys, ["train", "--file", str(p), "--out", str(tmp_path / "run")], "only one class", "'pos'")


def test_empty_text(tmp_path, capsys):
    texts = [t for t, _ in ROWS]; texts[5] = "   "
    p = _jsonl(tmp_path, [dict(text=t, label=y) for t, (_, y) in zip(texts, ROWS)])
    _fails(capsys, ["train", "--file", str(p), "--out", str(tmp_path / "run")], "empty or non-text 'text'", "row 5")
    p2 = _jsonl(tmp_path, [dict(text=(None if i == 2 else t), label=y) for i, (t, y) in enumerate(ROWS)], name="none.jsonl")
    _fails(capsys, ["train", "--file", str(p2), "--out", str(tmp_path / "run")], "empty or non-text", "row 2")


def test_too_few_rows(tmp_path, capsys):
    p = _csv(tmp_path, text=["good", "bad", "fine", "awful"], label=[1, 0, 1, 0])
    _fails(capsys, ["train", "--file", str(p), "--out", str(tmp_path / "run")], "at least 10 labelled rows")


def test_unknown_strategy_and_unlabelled_dataset(tmp_path, capsys):
    _fails(capsys, ["train", "--strategy", "ful", "--out", str(tmp_path / "run")], "Unknown strategy 'ful'", "Did you mean 'full'")
    _fails(capsys, ["train", "--dataset", "news_articles", "--out", str(tmp_path / "run")], "has no column 'label'")
    _fails(capsys, ["compare", "--strategies", "head,lorra", "--out", str(tmp_path / "cmp")], "unknown strategy 'lorra'", "Did you mean 'lora'")


def test_out_must_not_clobber(tmp_path, capsys):
    f = tmp_path / "afile"; f.write_text("x")
    assert main(["train", "--file", str(_csv(tmp_path)), "--out", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err and f.read_text() == "x"
    d = tmp_path / "notes"; d.mkdir(); (d / "mine.txt").write_text("keep")
    assert main(["train", "--file", str(_csv(tmp_path)), "--out", str(d)]) == 2
    assert "holds files ftlab did not write" in capsys.readouterr().err and (d / "mine.txt").read_text() == "keep"


def test_cli_exit_status_in_a_subprocess(tmp_path):
    "The installed command prints one line (no traceback) and exits with status 2."
    exe = Path(sys.executable).parent / "ftlab"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "import sys; from ftlab.cli import main; sys.exit(main())"]
    r = subprocess.run(cmd + ["train", "--file", str(tmp_path / "x.csv"), "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "no such file" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("strategy", ["head", "lora"])
def test_train_on_a_file_saves_and_reloads(tmp_path, capsys, strategy):
    "A user's JSONL file with string labels: trains, saves model + tokenizer + config, reloads to identical predictions."
    import torch
    from ftlab.finetune import load_finetuned, text_logits
    p = _jsonl(tmp_path, [dict(review=t, sentiment=y) for t, y in ROWS])
    out = tmp_path / "run"
    argv = ["train", "--file", str(p), "--text-col", "review", "--label-col", "sentiment", "--strategy", strategy,
            "--out", str(out), "--n-train", "0", "--n-test", "0", "--max-length", "32", "--epochs", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    cfg = json.loads((out / "ftlab_config.json").read_text())
    assert cfg["label_names"] == ["neg", "pos"] and cfg["strategy"] == strategy and cfg["adapter"] is False   # LoRA: merged at the top
    assert cfg.get("adapter_dir") == ("adapter" if strategy == "lora" else None)
    assert {"tokenizer.json", "ftlab_config.json"} <= {f.name for f in out.iterdir()}
    assert any(f.suffix == ".safetensors" for f in out.iterdir())
    m1, tok1, _ = load_finetuned(out); m2, tok2, _ = load_finetuned(out)
    texts = [t for t, _ in ROWS[:6]]
    torch.testing.assert_close(text_logits(m1, tok1, texts), text_logits(m2, tok2, texts), rtol=0, atol=0)
    assert m1.config.id2label == {0: "neg", 1: "pos"}


def test_python_dash_m():
    "`python -m ftlab.cli` runs the same command as `ftlab`, with the same exit statuses."
    ok = subprocess.run([sys.executable, "-m", "ftlab.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "usage: ftlab COMMAND" in ok.stdout, (ok.returncode, ok.stdout, ok.stderr[-1000:])
    bad = subprocess.run([sys.executable, "-m", "ftlab.cli", "no-such-command"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown command" in bad.stderr


# --- issue 28: --out never loses the user's files ----------------------------------------------------------------------
def _prev_output(tmp_path):
    "An earlier `ftlab train` output (config and weights), with the user's input file and a note put beside it."
    prev = tmp_path / "prev"; prev.mkdir()
    (prev / "ftlab_config.json").write_text(json.dumps(dict(strategy="head"))); (prev / "model.safetensors").write_bytes(b"old")
    (prev / "notes.txt").write_text("keep me")
    return prev, _csv(prev)


def _head_argv(data, out, *extra):
    return ["train", "--file", str(data), "--out", str(out), "--strategy", "head", "--n-train", "0", "--n-test", "0",
            "--max-length", "16", "--epochs", "1", *extra]


def test_out_with_user_files_is_refused_without_overwrite(tmp_path, capsys):
    prev, data = _prev_output(tmp_path)
    assert main(_head_argv(data, prev)) == 2
    err = capsys.readouterr().err
    assert "holds files ftlab did not write (data.csv, notes.txt)" in err and "--overwrite" in err, err
    assert data.exists() and (prev / "notes.txt").read_text() == "keep me" and (prev / "model.safetensors").read_bytes() == b"old"


@pytest.mark.parametrize("via_link", [False, True])
def test_overwrite_keeps_user_files_and_writes_through_a_symlink(tmp_path, capsys, via_link):
    "`--overwrite` replaces only ftlab's earlier files; the input and the note stay; a symlinked --out stays a link."
    prev, data = _prev_output(tmp_path)
    out = prev
    if via_link: out = tmp_path / "latest"; out.symlink_to(prev)
    assert main(_head_argv(data, out, "--overwrite")) == 0, capsys.readouterr().err
    assert data.exists() and (prev / "notes.txt").read_text() == "keep me"
    assert (prev / "model.safetensors").read_bytes() != b"old"
    cfg = json.loads((prev / "ftlab_config.json").read_text())
    assert "ftlab_config.json" in cfg["files"] and "notes.txt" not in cfg["files"] and "data.csv" not in cfg["files"]
    assert out.is_symlink() == via_link
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith((".old-", ".tmp-", ".ftlab-"))]
    assert not [p.name for p in prev.iterdir() if p.name.startswith((".old-", ".tmp-", ".ftlab-"))]


@pytest.mark.parametrize("case", ["dangling_link", "input_is_replaced", "input_is_replaced_relative", "under_a_file"])
def test_out_refused_before_anything_is_written(tmp_path, capsys, monkeypatch, case):
    data = _csv(tmp_path)
    if case == "dangling_link":
        out = tmp_path / "link"; out.symlink_to(tmp_path / "gone"); needle = "symlink to"
    elif case.startswith("input_is_replaced"):
        out, _ = _prev_output(tmp_path); data = out / "tokenizer.json"; data.write_text("{}"); needle = "one of the files"
        if case.endswith("relative"): monkeypatch.chdir(tmp_path); out, data = Path("prev"), Path("prev/tokenizer.json")
    else:
        out = data / "run"; needle = "which is a file, not a directory"
    assert main(_head_argv(data, out, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err, err
    assert not (tmp_path / "gone").exists() and data.exists()


def test_out_not_writable_is_refused_before_training(tmp_path, capsys, monkeypatch):
    "A read-only --out fails in a second, not after training (as root, where chmod does not bite, the probe is made to fail)."
    from ftlab import finetune as F
    monkeypatch.setattr(F, "run_strategy", lambda *a, **k: pytest.fail("trained before checking --out"))
    ro = tmp_path / "ro"; ro.mkdir(); ro.chmod(0o555)
    if os.geteuid() == 0:
        import ftlab.cli as cli
        def deny(*a, **k): raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(cli.tempfile, "mkdtemp", deny)
    try:
        assert main(_head_argv(_csv(tmp_path), ro / "run")) == 2
    finally: ro.chmod(0o755)
    err = capsys.readouterr().err
    assert "cannot be written" in err and "not writable" in err, err
    assert not (ro / "run").exists()


# --- issue 28: every user error is one or two lines, exit 2 -----------------------------------------------------------
@pytest.mark.parametrize("flag, value, needle", [
    ("--epochs", "0", "--epochs must be a positive number"), ("--epochs", "nan", "--epochs must be a positive number"),
    ("--lr", "0", "--lr must be a positive number"), ("--lr", "-1e-3", "--lr must be a positive number"),
    ("--max-length", "0", "--max-length must be at least 3"), ("--max-length", "-3", "--max-length must be at least 3"),
    ("--max-length", "100000", "--max-length 100000 is more than"),
    ("--n-test", "-1", "--n-test must be 0 (all examples) or a positive count"), ("--n-train", "-5", "--n-train must be 0"),
    ("--seed", "-1", "--seed must be between 0 and"), ("--seed", str(2**70), "--seed must be between 0 and"),
    ("--batch-size", "0", "--batch-size must be a positive integer"),
])
def test_bad_numbers_are_refused(tmp_path, capsys, flag, value, needle):
    err = _fails(capsys, ["train", "--file", str(_csv(tmp_path)), "--out", str(tmp_path / "run"), f"{flag}={value}"], needle)
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32)),
       n=st.integers(max_value=-1), epochs=st.floats(max_value=0) | st.just(float("inf")))
def test_any_out_of_range_number_is_refused(tmp_path, capsys, seed, n, epochs):
    data = tmp_path / "data.csv"
    if not data.exists(): _csv(tmp_path)
    for flag, v in (("--seed", seed), ("--n-test", n), ("--epochs", epochs)):
        assert main(["train", "--file", str(data), "--out", str(tmp_path / "run"), f"{flag}={v}"]) == 2
        assert f"{flag} must be" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("arg, needle", [("--steps=0", "--steps must be"), ("--n=-5", "--n -5 is too small"),
                                         ("--max-length=0", "--max-length must be"), ("--seeds=0", "--seeds must be"),
                                         ("--batch-size=0", "--batch-size must be"), ("--margin=-1", "--margin")])
def test_compare_refuses_bad_numbers(tmp_path, capsys, arg, needle):
    _fails(capsys, ["compare", "--strategies", "head", arg, "--out", str(tmp_path / "cmp")], needle)


def test_compare_out_an_existing_file(tmp_path, capsys):
    f = tmp_path / "board.csv"; f.write_text("x")
    assert main(["compare", "--strategies", "head", "--out", str(f)]) == 2
    assert "--out" in capsys.readouterr().err and f.read_text() == "x"


def test_offline_hub_model_says_what_is_available(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = _fails(capsys, ["train", "--file", str(_csv(tmp_path)), "--model", "bert-base-uncased", "--out", str(tmp_path / "run")],
                 "'bert-base-uncased'", "without internet", "encoder")
    assert "Traceback" not in err


@pytest.mark.parametrize("exc, needle", [
    ("diverged", "The training loss became nan"), ("overflow", "unexpected error: OverflowError"), ("oserror", "cannot write or read"),
])
def test_errors_during_training_are_one_message(tmp_path, capsys, monkeypatch, exc, needle):
    "An error while training ends in its message (TrainingDiverged, an OSError) or one line naming it, never a traceback, nothing written."
    from ftlab import finetune as F
    from ftlab.engine import TrainingDiverged
    def boom(*a, **k):
        if exc == "diverged": raise TrainingDiverged("The training loss became nan at or before step 1. Try a lower learning rate.")
        if exc == "overflow": raise OverflowError("int too big to convert")
        raise PermissionError(13, "Permission denied", "/some/where")
    monkeypatch.setattr(F, "run_strategy", boom)
    argv = _head_argv(_csv(tmp_path), tmp_path / "run")
    err = _fails(capsys, argv, needle)
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    assert main(argv + ["--debug"]) == 2 and "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("FTLAB_DEBUG", "1")
    assert main(argv) == 2 and "Traceback" in capsys.readouterr().err


def test_huge_lr_diverges_with_a_message(tmp_path, capsys):
    "The real thing: --lr 1e6 makes the loss non-finite; the command prints TrainingDiverged's advice, no traceback, writes nothing."
    err = _fails(capsys, ["train", "--file", str(_csv(tmp_path)), "--strategy", "full", "--lr", "1e6", "--n-train", "0", "--n-test", "0",
                          "--max-length", "16", "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "run")], "lower learning rate")
    assert "Traceback" not in err


def test_head_epochs_are_used_and_recorded(tmp_path, capsys, monkeypatch):
    "`--strategy head --epochs 3` trains 3 passes over the cached features and records 3; without --epochs it records the passes it made."
    from ftlab import finetune as F
    seen, real = [], F.run_strategy
    monkeypatch.setattr(F, "run_strategy", lambda *a, **k: (seen.append(k), real(*a, **k))[1])
    data = _csv(tmp_path)
    argv = ["train", "--file", str(data), "--strategy", "head", "--n-train", "0", "--n-test", "0", "--max-length", "16"]
    assert main(argv + ["--epochs", "3", "--out", str(tmp_path / "a")]) == 0, capsys.readouterr().err
    assert seen[-1]["head_epochs"] == 3 and json.loads((tmp_path / "a" / "ftlab_config.json").read_text())["epochs"] == 3
    assert main(argv + ["--out", str(tmp_path / "b")]) == 0, capsys.readouterr().err
    assert "head_epochs" not in seen[-1] and json.loads((tmp_path / "b" / "ftlab_config.json").read_text())["epochs"] == 10


# --- issue 28: labels --------------------------------------------------------------------------------------------------
def _labels(ys): return pd.DataFrame(dict(text=[f"text number {i}" for i in range(len(ys))], label=ys))


@pytest.mark.parametrize("label, needle", [("NaN", "the label 'NaN'"), ("nan", "a missing value"), ("null", "a missing value"),
                                           ("label", "repeats the header")])
def test_missing_value_words_and_header_rows_are_refused(tmp_path, capsys, label, needle):
    ys = [y for _, y in ROWS]; texts = [t for t, _ in ROWS]
    ys[7] = label; texts[7] = "text" if label == "label" else texts[7]
    _fails(capsys, ["train", "--file", str(_csv(tmp_path, text=texts, label=ys)), "--out", str(tmp_path / "run")], needle, "row 7")


def test_label_spaces_are_stripped_and_said(tmp_path, capsys):
    from ftlab.cli import read_table, validate_labelled
    ys = [y + (" " if i % 3 == 0 else "") for i, (_, y) in enumerate(ROWS)]
    with pytest.warns(UserWarning, match="spaces around them"):
        out, names = validate_labelled(read_table(_csv(tmp_path, text=[t for t, _ in ROWS], label=ys)))
    assert names == ["neg", "pos"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["pos", "neg"]), st.text(" \t", max_size=2), st.text(" \t", max_size=2)), min_size=12, max_size=40))
def test_any_padding_gives_the_stripped_classes(rows):
    from ftlab.cli import validate_labelled
    ys = [a + y + b for y, a, b in rows]
    if len({y for y, _, _ in rows}) < 2: return
    import warnings
    with warnings.catch_warnings(): warnings.simplefilter("ignore"); out, names = validate_labelled(_labels(ys))
    assert names == sorted({y for y, _, _ in rows}) and [names[i] for i in out.label] == [y for y, _, _ in rows]


def test_id_column_as_label_is_refused(tmp_path, capsys):
    df = pd.DataFrame(dict(id=range(len(ROWS)), text=[t for t, _ in ROWS], label=[y for _, y in ROWS]))
    p = tmp_path / "data.csv"; df.to_csv(p, index=False)
    _fails(capsys, ["train", "--file", str(p), "--label-col", "id", "--out", str(tmp_path / "run")],
           f"{len(ROWS)} classes in 'id' for {len(ROWS)} rows", "--label-col")


def test_tab_separated_csv_is_read_and_said(tmp_path):
    from ftlab.cli import read_table, validate_labelled
    p = tmp_path / "data.csv"; pd.DataFrame(dict(text=[t for t, _ in ROWS], label=[y for _, y in ROWS])).to_csv(p, sep="\t", index=False)
    with pytest.warns(UserWarning, match="tab-separated"): df = read_table(p)
    assert list(df.columns) == ["text", "label"] and validate_labelled(df)[1] == ["neg", "pos"]


# --- issue 28: too few examples per class, a directory that is not a model, a full disk ---------------------------------
def test_too_few_examples_per_class_to_split_is_said_in_our_words(tmp_path, capsys):
    "10 rows in 5 classes: ftlab's message (how many rows are needed, what to do), not scikit-learn's test_size wording."
    p = _csv(tmp_path, text=[f"text number {i}" for i in range(10)], label=[f"c{i % 5}" for i in range(10)])
    err = _fails(capsys, ["train", "--file", str(p), "--out", str(tmp_path / "run")],
                 "too few examples per class", "10 rows in 5 classes", "the smallest ('c0') with 2", "merge or drop the rare classes")
    assert re.search(r"needs at least \d+ rows", err) and "test_size" not in err and "least populated" not in err, err
    assert len(err.strip().splitlines()) == 1, err


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(1, 12), min_size=2, max_size=8))
def test_any_class_counts_split_or_get_our_message(counts):
    "Whatever the class sizes, the three-way split succeeds or says how many rows are needed; that many, spread evenly, splits."
    from ftlab.cli import _split
    names = [f"c{i}" for i in range(len(counts))]
    df = pd.DataFrame(dict(text=[f"t{j}" for j in range(sum(counts))], label=[i for i, c in enumerate(counts) for _ in range(c)]))
    try: splits = _split(df, names, "data.csv")
    except ValueError as e:
        msg = str(e)
        assert msg.startswith("data.csv has too few examples per class") and "test_size" not in msg and "least populated" not in msg, msg
        need = int(re.search(r"needs at least (\d+) rows", msg).group(1))
        even = pd.DataFrame(dict(text=[f"t{j}" for j in range(need)], label=[j % len(counts) for j in range(need)]))
        splits = _split(even, names, "data.csv")
        assert all(set(s.label) == set(range(len(counts))) for s in splits.values())   # every class in every split
        return
    assert sum(len(s) for s in splits.values()) == len(df)


@pytest.mark.parametrize("kind", ["empty", "random_files", "config_only", "adapter"])
def test_a_directory_that_is_not_a_model(tmp_path, capsys, kind):
    "--model DIR without config.json / weights / tokenizer files: said so (what a model directory holds), not a tokenizer's wording."
    d = tmp_path / "notamodel"; d.mkdir()
    if kind == "random_files": (d / "weights.dat").write_bytes(os.urandom(256)); (d / "notes.txt").write_text("hello")
    if kind == "config_only": (d / "config.json").write_text(json.dumps(dict(hidden_size=8)))
    if kind == "adapter": (d / "adapter_config.json").write_text("{}"); (d / "adapter_model.safetensors").write_bytes(b"x")
    needle = "is a LoRA adapter" if kind == "adapter" else "is not a model directory"
    err = _fails(capsys, _head_argv(_csv(tmp_path), tmp_path / "run", "--model", str(d)), needle)
    if kind != "adapter": assert "config.json" in err and "save_pretrained" in err, err
    assert "sentencepiece" not in err.lower() and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err


@pytest.mark.parametrize("fault", ["safetensors", "enospc"])
@pytest.mark.parametrize("earlier_output", [False, True])
def test_full_disk_while_saving_the_model(tmp_path, capsys, monkeypatch, fault, earlier_output):
    "The disk fills while the trained model is written: one or two lines, exit 2, nothing half-written, an earlier output untouched."
    import errno
    import transformers.modeling_utils as MU
    import ftlab.checkpoint as C
    from safetensors import SafetensorError
    if fault == "safetensors":
        def boom(*a, **k): raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        monkeypatch.setattr(MU, "safe_save_file", boom)
    else:
        def boom(*a, **k): raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(C, "_fsync_tree", boom)
    if earlier_output: out, data = _prev_output(tmp_path); before = {p.name: p.read_bytes() for p in out.iterdir()}
    else: out, data = tmp_path / "run", _csv(tmp_path)
    assert main(_head_argv(data, out, *(["--overwrite"] if earlier_output else []))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    err = [l for l in err if l.startswith("ftlab train: error") or "Traceback" in l or l.startswith("ftlab train: unexpected")]
    assert len(err) == 1 and "the disk is full" in err[0] and "Nothing half-written" in err[0] and "--out on another disk" in err[0], err
    if earlier_output: assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    else: assert not out.exists()
    left = [p for p in tmp_path.rglob("*") if p.name.startswith((".tmp-", ".ftlab-new-", ".old-"))]
    assert not left, left


def test_compare_with_a_directory_that_is_not_a_model(tmp_path, capsys):
    d = tmp_path / "notamodel"; d.mkdir(); (d / "notes.txt").write_text("hello")
    err = _fails(capsys, ["compare", "--strategies", "head", "--model", str(d), "--out", str(tmp_path / "cmp")], "is not a model directory")
    assert "sentencepiece" not in err.lower() and "Traceback" not in err, err


# --- issue 34: a user's file trains on all of it; predict and evaluate; LoRA outputs load like full ones ---------------
def test_a_users_file_trains_on_all_rows_for_3_epochs(tmp_path, capsys, monkeypatch):
    "--file ignores the profile's caps (2,000 rows, 1 epoch, 64 tokens): all rows, 3 epochs, 128 tokens; --n-train/--epochs/--max-length still override."
    from ftlab import finetune as F
    seen = []
    def stop(strategy, tr, te, **k): seen.append((len(tr), len(te), k)); raise KeyboardInterrupt
    monkeypatch.setattr(F, "run_strategy", stop)
    rows = [(f"{t} number {i}", y) for i in range(110) for t, y in ROWS]            # 2,640 rows: more than the fast profile's 2,000
    data = _csv(tmp_path, text=[t for t, _ in rows], label=[y for _, y in rows])
    assert main(["train", "--file", str(data), "--strategy", "full", "--out", str(tmp_path / "a")]) == 130
    from ftlab.assets import stratified_split
    from ftlab.cli import read_table, validate_labelled
    want = {k: len(v) for k, v in stratified_split(validate_labelled(read_table(data))[0], seed=0).items()}
    n_tr, n_te, kw = seen[-1]
    assert (n_tr, n_te) == (want["train"], want["test"]) and n_te > 500 and kw["epochs"] == 3 and "lr" not in kw, (n_tr, n_te, want)
    assert "3 epoch(s), 128 tokens (defaults for your file)" in capsys.readouterr().out
    assert main(["train", "--file", str(data), "--strategy", "full", "--n-train", "100", "--epochs", "1", "--max-length", "32",
                 "--out", str(tmp_path / "b")]) == 130
    assert seen[-1][0] == 100 and seen[-1][2]["epochs"] == 1 and "1 epoch(s), 32 tokens" in capsys.readouterr().out


def test_help_says_what_by_profile_means_and_version(capsys):
    assert main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "default with --file: 3; with a bundled dataset the profile's" in out and "in profile" in out
    assert "by profile" not in out
    assert main(["--version"]) == 0
    from ftlab import __version__
    assert capsys.readouterr().out.strip() == f"ftlab {__version__}"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    "A `--strategy head` output of ROWS (the fastest to train), for predict and evaluate."
    d = tmp_path_factory.mktemp("saved"); data = _csv(d)
    assert main(["train", "--file", str(data), "--strategy", "head", "--max-length", "16", "--out", str(d / "model")]) == 0
    return d / "model"


def test_predict_writes_labels_and_probabilities(saved, tmp_path, capsys):
    ids = list(range(len(ROWS)))
    data = _csv(tmp_path, review=[t for t, _ in ROWS], id=ids)
    out = tmp_path / "preds.csv"
    assert main(["predict", "--model", str(saved), "--file", str(data), "--text-col", "review", "--out", str(out), "--batch-size", "5"]) == 0, capsys.readouterr().err
    assert "24 texts" in capsys.readouterr().out
    df = pd.read_csv(out)
    assert list(df.columns) == ["review", "id", "predicted", "prob_neg", "prob_pos"] and df.id.tolist() == ids
    assert set(df.predicted) <= {"neg", "pos"} and ((df.prob_neg + df.prob_pos - 1).abs() < 1e-5).all()
    assert (df.predicted == df[["prob_neg", "prob_pos"]].idxmax(axis=1).str[5:]).all()
    # an existing file is replaced only with --overwrite; the input never; a .txt file is one text per line
    txt = tmp_path / "texts.txt"; txt.write_text("a joy\n\nso dull\n")
    assert main(["predict", "--model", str(saved), "--file", str(txt), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and len(pd.read_csv(out)) == 24
    assert main(["predict", "--model", str(saved), "--file", str(data), "--text-col", "review", "--out", str(data), "--overwrite"]) == 2
    assert "the input file" in capsys.readouterr().err and "predicted" not in pd.read_csv(data).columns
    assert main(["predict", "--model", str(saved), "--file", str(txt), "--out", str(out), "--overwrite"]) == 0
    assert "Wrote" in capsys.readouterr().out
    assert pd.read_csv(out).text.tolist() == ["a joy", "so dull"] and (out.stat().st_mode & 0o044) == 0o044 & ~_umask()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert main(["predict", "--model", str(saved), "--file", str(txt)]) == 0                 # no --out: the CSV on stdout
    assert capsys.readouterr().out.startswith("text,predicted,prob_neg,prob_pos\na joy,")


def _umask():
    um = os.umask(0); os.umask(um); return um


@pytest.mark.parametrize("argv, needle", [
    (["--model", "{tmp}/nothing"], "no such directory"), (["--file", "{tmp}/texts.tsv"], "unsupported file type '.tsv'"),
    (["--text-col", "body"], "no column 'body'"), (["--model", "{tmp}"], "no config.json"), (["--model", "{encoder}"], "not a trained text classifier"), (["--out", "{tmp}"], "is a directory"), (["--batch-size", "0"], "--batch-size must be"),
])
def test_predict_errors_are_one_line(saved, tmp_path, capsys, argv, needle):
    data = _csv(tmp_path)
    base = dict(zip(["--model", "--file"], [str(saved), str(data)]))
    from ftlab.assets import asset_dir
    extra = [a.replace("{tmp}", str(tmp_path)).replace("{encoder}", str(asset_dir("encoder"))) for a in argv]
    base.update(dict(zip(extra[::2], extra[1::2])))
    assert main(["predict", *[x for kv in base.items() for x in kv]]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err


def test_evaluate_prints_and_writes_metrics_with_intervals(saved, tmp_path, capsys):
    data = _csv(tmp_path)
    assert main(["evaluate", "--model", str(saved), "--file", str(data), "--out", str(tmp_path / "m.json")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert re.search(r"accuracy \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\], macro-F1", out) and "precision" in out and "support" in out, out
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n"] == 24 and m["accuracy"]["lo"] <= m["accuracy"]["estimate"] <= m["accuracy"]["hi"]
    assert set(m["per_class"]) == {"neg", "pos"} and m["per_class"]["pos"]["support"] == 12
    assert main(["evaluate", "--model", str(saved), "--file", str(data), "--out", str(tmp_path / "m.csv")]) == 0
    df = pd.read_csv(tmp_path / "m.csv").set_index("name")
    assert df.loc["accuracy", "estimate"] == pytest.approx(m["accuracy"]["estimate"]) and df.loc["neg", "support"] == 12
    # integer labels are read as class ids (said); a label the model does not know is named
    ints = _csv(tmp_path, name="ints.csv", text=[t for t, _ in ROWS], label=[int(y == "pos") for _, y in ROWS])
    assert main(["evaluate", "--model", str(saved), "--file", str(ints)]) == 0
    r = capsys.readouterr()
    assert "read as class ids: 0 = 'neg', 1 = 'pos'" in r.err and f"accuracy {m['accuracy']['estimate']:.3f}" in r.out
    odd = _csv(tmp_path, name="odd.csv", text=[t for t, _ in ROWS], label=[("neutral" if i % 8 == 0 else y) for i, (_, y) in enumerate(ROWS)])
    assert main(["evaluate", "--model", str(saved), "--file", str(odd)]) == 2
    err = capsys.readouterr().err
    assert "labels the model does not know: 'neutral' (3 rows)" in err and "'neg', 'pos'" in err, err


def test_lora_output_is_a_merged_model_that_pipeline_loads(tmp_path, capsys, caplog):
    "LoRA's --out: a merged model with the label names (pipeline, no 'newly initialized'), the adapter beside it naming its base by hub id, a model card."
    import logging, torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, pipeline
    from ftlab.assets import load_encoder
    from ftlab.cli import load_classifier
    out = tmp_path / "lora"
    assert main(["train", "--file", str(_csv(tmp_path)), "--strategy", "lora", "--max-length", "16", "--epochs", "1", "--out", str(out)]) == 0
    r = capsys.readouterr()
    assert "warning: only" in r.err and "optimizer steps" in r.err                      # 24 rows, 1 epoch: too short, said
    acfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert acfg["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    card = (out / "README.md").read_text()
    assert "strategy `lora`" in card and "| accuracy |" in card and "95% interval" in card and str(_csv(tmp_path)) in card
    log = pd.read_csv(out / "training_log.csv")
    assert {"step", "loss", "lr"} <= set(log.columns) and (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    cfg = json.loads((out / "ftlab_config.json").read_text())
    assert {"README.md", "adapter", "training_log.csv", "loss.png"} <= set(cfg["files"]) and cfg["lr"] == 1e-3
    caplog.set_level(logging.WARNING)
    clf = pipeline("text-classification", model=str(out))
    assert {p["label"] for p in clf([t for t, _ in ROWS[:6]])} <= {"neg", "pos"}
    logs = caplog.text + capsys.readouterr().err
    assert "newly initialized" not in logs and "MISSING" not in logs, logs
    # the merged model computes what base + adapter computes
    m, tok, names, _ = load_classifier(out)
    base, _ = load_encoder("encoder", num_labels=2)
    pm = PeftModel.from_pretrained(base, out / "adapter").eval()
    x = tok([t for t, _ in ROWS[:6]], padding=True, return_tensors="pt")
    with torch.no_grad(): torch.testing.assert_close(m(**x).logits, pm(**x).logits, atol=1e-4, rtol=1e-4)
    assert names == ["neg", "pos"]
    assert main(["evaluate", "--model", str(out), "--file", str(_csv(tmp_path))]) == 0 and "macro-F1" in capsys.readouterr().out
    assert main(["evaluate", "--model", str(out / "adapter"), "--file", str(_csv(tmp_path))]) == 2
    assert "pass the output itself" in capsys.readouterr().err


def test_an_older_lora_output_with_only_the_adapter_still_loads(tmp_path, capsys):
    "Outputs of earlier versions (the adapter at the top, adapter: true) are read by predict and evaluate through the base model."
    from ftlab.assets import load_encoder
    from ftlab.finetune import add_lora, save_finetuned
    m, tok = load_encoder("encoder", num_labels=2)
    save_finetuned(add_lora(m), tok, tmp_path / "old", strategy="lora", base_model="encoder", label_names=["neg", "pos"], max_length=16)
    assert main(["predict", "--model", str(tmp_path / "old"), "--file", str(_csv(tmp_path))]) == 0, capsys.readouterr().err
    assert set(pd.read_csv(__import__("io").StringIO(capsys.readouterr().out)).predicted) <= {"neg", "pos"}

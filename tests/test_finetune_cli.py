"""`ftlab train` / `ftlab compare`: bad input gives a clear error, exit status 2 and writes nothing; good input trains and saves."""
import json, os, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest

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
    _fails(capsys, ["compare", "--strategies", "head,lorra", "--out", str(tmp_path / "cmp")], "Unknown strategy 'lorra'")


def test_out_must_not_clobber(tmp_path, capsys):
    f = tmp_path / "afile"; f.write_text("x")
    assert main(["train", "--file", str(_csv(tmp_path)), "--out", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err and f.read_text() == "x"
    d = tmp_path / "notes"; d.mkdir(); (d / "mine.txt").write_text("keep")
    assert main(["train", "--file", str(_csv(tmp_path)), "--out", str(d)]) == 2
    assert "holds other files" in capsys.readouterr().err and (d / "mine.txt").read_text() == "keep"


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
    assert cfg["label_names"] == ["neg", "pos"] and cfg["strategy"] == strategy and cfg["adapter"] == (strategy == "lora")
    assert {"tokenizer.json", "ftlab_config.json"} <= {f.name for f in out.iterdir()}
    assert any(f.suffix == ".safetensors" for f in out.iterdir())
    m1, tok1, _ = load_finetuned(out); m2, tok2, _ = load_finetuned(out)
    texts = [t for t, _ in ROWS[:6]]
    torch.testing.assert_close(text_logits(m1, tok1, texts), text_logits(m2, tok2, texts), rtol=0, atol=0)
    if strategy == "head":
        assert m1.config.id2label == {0: "neg", 1: "pos"}


def test_python_dash_m():
    "`python -m ftlab.cli` runs the same command as `ftlab`, with the same exit statuses."
    ok = subprocess.run([sys.executable, "-m", "ftlab.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "usage: ftlab COMMAND" in ok.stdout, (ok.returncode, ok.stdout, ok.stderr[-1000:])
    bad = subprocess.run([sys.executable, "-m", "ftlab.cli", "no-such-command"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown command" in bad.stderr

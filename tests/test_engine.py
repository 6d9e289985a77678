"""Engine tests that a notebook shows badly: several processes, and resume after a hard interrupt."""
import json, os, subprocess, sys, tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "dist_fit_script.py"


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _run(cmd, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def test_two_processes_match_one(tmp_path):
    "fit in 2 CPU processes (torchrun, gloo) ends with the same weights as 1 process with the same global batch."
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    fp32 = {"FTLAB_PRECISION": "fp32"}   # the exact comparison; tests/test_contract.py also runs it in bf16
    _run([sys.executable, str(SCRIPT), one], fp32)
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
          "--master_port", str(_free_port()), str(SCRIPT), two], fp32)
    r1, r2 = json.load(open(one + ".json")), json.load(open(two + ".json"))
    assert (r1["world"], r2["world"]) == (1, 2), "the 2-process run did not start a process group"
    a, b = torch.load(one + ".pt", weights_only=True), torch.load(two + ".pt", weights_only=True)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff < 1e-5, f"max weight difference {diff}"
    assert r1["metrics"]["accuracy"] == r2["metrics"]["accuracy"]
    assert r1["losses"] == pytest.approx(r2["losses"], abs=1e-5)  # logged loss is the mean over all processes


def test_checkpoint_is_atomic_under_kill(tmp_path):
    "Killing a process while it writes a checkpoint leaves the previous checkpoint complete and loadable."
    code = f"""
import os, signal, time
from ftlab import checkpoint as engine
from ftlab.engine import fit
from ftlab.testing import tiny_bert, toy_dataset
real = engine._fsync_tree
calls = {{"n": 0}}
def slow(d):
    calls["n"] += 1
    if calls["n"] == 2:            # the second checkpoint: die half-way through writing it
        os.kill(os.getpid(), signal.SIGKILL)
    real(d)
engine._fsync_tree = slow
fit(tiny_bert(), toy_dataset(128), max_steps=8, save_every=4, output_dir={str(tmp_path)!r}, batch_size=16, progress=False, plot=False)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, (r.returncode, r.stderr[-2000:])
    from ftlab.engine import latest_checkpoint, load_checkpoint
    from ftlab.testing import tiny_bert
    ck = latest_checkpoint(tmp_path)
    assert ck is not None and ck.name == "checkpoint-4", list(tmp_path.iterdir())
    st = load_checkpoint(tmp_path, tiny_bert())
    assert st["step"] == 4


def test_resume_refuses_missing_checkpoint(tmp_path):
    from ftlab.engine import fit
    from ftlab.testing import tiny_bert, toy_dataset
    with pytest.raises(FileNotFoundError, match="No complete checkpoint"):
        fit(tiny_bert(), toy_dataset(32), max_steps=1, resume_from=tmp_path / "nothing", progress=False, plot=False)


def test_pickle_checkpoint_refused(tmp_path):
    from ftlab.checkpoint import _load_weights
    from ftlab.testing import tiny_bert
    m = tiny_bert()
    torch.save(m.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="refuses pickle"):
        _load_weights(m, tmp_path)


def test_fit_does_not_keep_models_alive():
    "The Accelerator is shared between runs; a finished fit must not leave its model and optimizer registered in it."
    import gc, weakref
    from ftlab.engine import fit, get_accelerator
    from ftlab.testing import tiny_bert, toy_dataset
    m = tiny_bert(); ref = weakref.ref(m)
    r = fit(m, toy_dataset(32), max_steps=2, batch_size=16, progress=False, plot=False)
    acc = get_accelerator()
    assert not any(x is m for x in acc._models) and not acc._optimizers
    with pytest.raises(FileNotFoundError):   # a run that fails after `prepare` (here: resuming from nothing) releases too
        fit(tiny_bert(), toy_dataset(32), max_steps=1, resume_from="/nonexistent/ckpt", progress=False, plot=False)
    assert not acc._models and not acc._optimizers
    del m, r; gc.collect()
    assert ref() is None, "the fitted model is still referenced after fit returned and the caller dropped it"


def test_fit_turns_the_kv_cache_off_while_training_and_restores_it():
    "Training never reads a KV cache (Trainer also sets use_cache=False); generation afterwards wants it back."
    import datasets
    from ftlab.engine import Callback, fit
    from ftlab.testing import tiny_llama
    m = tiny_llama(use_cache=True)
    seen = []
    class Look(Callback):
        def on_step_end(self, state): seen.append(m.config.use_cache)
    ids = [[1, 5, 6, 7, 8, 9][: 3 + i % 4] for i in range(16)]
    ds = datasets.Dataset.from_dict(dict(input_ids=ids, attention_mask=[[1] * len(i) for i in ids], labels=ids))
    fit(m, ds, task="lm", max_steps=2, batch_size=8, progress=False, plot=False, callbacks=[Look()])
    assert seen == [False, False] and m.config.use_cache is True


def test_get_accelerator_after_a_trl_style_state():
    "A trl trainer (bf16=False) leaves Accelerate's process state at fp32; the engine's accelerator must still start at bf16."
    from accelerate import Accelerator
    from ftlab.engine import accelerate_precision, get_accelerator, release_accelerator, resolve_precision
    release_accelerator()                          # whatever the tests before left behind
    Accelerator(mixed_precision="no", cpu=True)    # what a trl trainer with bf16=False leaves in the process
    assert get_accelerator("bf16").mixed_precision == "bf16"
    with pytest.raises(ValueError, match="already been initialized"): Accelerator(mixed_precision="no", cpu=True)
    release_accelerator()
    assert Accelerator(mixed_precision="no", cpu=True).mixed_precision == "no"
    assert get_accelerator().mixed_precision == accelerate_precision(resolve_precision())
    assert get_accelerator("fp32").mixed_precision == "no"
    release_accelerator()


def test_fit_records_its_precision_and_inference_after_fit_uses_it(monkeypatch):
    "A run trained in fp32 where 'auto' means bf16 (a GPU; here FTLAB_PRECISION stands in) is evaluated in fp32, not bf16."
    import contextlib, warnings
    from ftlab.engine import evaluate, fit, inference_autocast, resolve_precision, trained_precision
    from ftlab.testing import tiny_bert, toy_dataset
    assert resolve_precision("no") == "fp32" and resolve_precision("fp16") == "fp16"
    with pytest.raises(ValueError, match="precision must be one of"): resolve_precision("int8")
    monkeypatch.setenv("FTLAB_PRECISION", "bf16")
    ds = toy_dataset(64)
    r = fit(tiny_bert(), ds, max_steps=2, batch_size=32, progress=False, plot=False, precision="fp32")
    assert (r.precision, trained_precision(r.model)) == ("fp32", "fp32")
    assert isinstance(inference_autocast(r.model), contextlib.nullcontext)
    assert isinstance(inference_autocast(r.model, "auto"), torch.autocast)      # asked for: as asked
    assert trained_precision(tiny_bert()) == "auto" and isinstance(inference_autocast(tiny_bert()), torch.autocast)
    seen = []
    monkeypatch.setattr("ftlab.inference.inference_autocast", lambda m, p=None: seen.append(trained_precision(m) if p is None else p) or contextlib.nullcontext())
    evaluate(r.model, ds)
    assert seen == ["fp32"]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert fit(tiny_bert(), ds, max_steps=1, batch_size=32, progress=False, plot=False, mixed_precision="bf16").precision == "bf16"
    assert any(issubclass(x.category, DeprecationWarning) for x in w)


def test_grouped_settings_train_as_the_flat_spellings(tmp_path):
    "Evaluation(...) and a Checkpointing callback train, evaluate, checkpoint and resume exactly as fit's flat keywords, which the chapters pass."
    import pandas as pd
    from ftlab.engine import Checkpointing, Evaluation, fit
    from ftlab.testing import tiny_bert, toy_dataset
    q = dict(batch_size=16, lr=3e-3, log_every=3, plot=False, progress=False, precision="fp32")
    ds, ev = toy_dataset(128), toy_dataset(32, seed=1)
    a = fit(tiny_bert(), ds, ev, max_steps=8, eval_every=4, eval_batch_size=16, output_dir=tmp_path/"a", save_every=4, **q)
    b = fit(tiny_bert(), ds, ev, max_steps=8, evaluation=Evaluation(every=4, batch_size=16), callbacks=[Checkpointing(tmp_path/"b", save_every=4)], **q)
    pd.testing.assert_frame_equal(a.history, b.history)
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert sorted(p.name for p in (tmp_path/"a").iterdir()) == sorted(p.name for p in (tmp_path/"b").iterdir()) == ["checkpoint-4", "checkpoint-8"]
    ra = fit(tiny_bert(), ds, ev, max_steps=12, eval_every=4, output_dir=tmp_path/"a", save_every=4, resume_from=tmp_path/"a", **q)
    rb = fit(tiny_bert(), ds, ev, max_steps=12, evaluation=Evaluation(every=4), callbacks=[Checkpointing(tmp_path/"b", save_every=4, resume_from=tmp_path/"b")], **q)
    pd.testing.assert_frame_equal(ra.history, rb.history)
    with pytest.raises(ValueError, match="not both"): fit(tiny_bert(), ds, max_steps=1, eval_every=2, evaluation=Evaluation(), **q)
    with pytest.raises(TypeError, match="unexpected keyword"): fit(tiny_bert(), ds, max_steps=1, eval_evry=2, **q)


def test_logging_group_logs_as_the_flat_spellings_which_warn():
    "logging=Logging(every, progress, plot) trains and logs exactly as the deprecated log_every=/progress=/plot=, which warn (at the caller) with the logging= to write."
    import warnings
    import pandas as pd
    from ftlab.engine import Logging, fit
    from ftlab.testing import tiny_bert, toy_dataset
    ds, q = toy_dataset(64), dict(max_steps=6, batch_size=16, lr=3e-3, precision="fp32")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        a = fit(tiny_bert(), ds, log_every=2, progress=False, plot=False, **q)
    b = fit(tiny_bert(), ds, logging=Logging(every=2, progress=False, plot=False), **q)
    pd.testing.assert_frame_equal(a.history, b.history)
    assert list(b.history.step) == [2, 4, 6]
    said = [x for x in w if issubclass(x.category, DeprecationWarning) and "logging=" in str(x.message)]
    assert len(said) == 1 and "write logging=Logging(every=2, progress=False, plot=False)" in str(said[0].message), [str(x.message) for x in w]
    assert said[0].filename == __file__   # the warning points at the caller's line, not into ftlab
    with pytest.raises(ValueError, match="not both"): fit(tiny_bert(), ds, logging=Logging(), plot=False, **q)

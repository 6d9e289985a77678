"""Issue 33: the library's wrappers of `fit` pass it grouped settings (`ftlab.engine.fit_kwargs`). None of them makes `fit`
warn; a caller's own group goes through a wrapper; a caller's deprecated flat keyword still works, and only it warns."""
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from ftlab.engine import Logging, Optimization, fit
from ftlab.testing import tiny_bert, toy_dataset

FIT_DEPRECATED = dict(message="fit: ", category=DeprecationWarning)   # every deprecation `fit` itself raises starts with "fit: "


@pytest.fixture
def strict():
    "`fit`'s DeprecationWarning is an error (other libraries' warnings are left alone)."
    with warnings.catch_warnings():
        warnings.filterwarnings("error", **FIT_DEPRECATED)
        yield


def _said(w) -> list[str]:
    return [str(x.message) for x in w if issubclass(x.category, DeprecationWarning) and str(x.message).startswith("fit: ")]


@pytest.fixture(scope="module")
def toy():
    return toy_dataset(64), toy_dataset(32, seed=1)


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer
    from ftlab.assets import model_path
    return AutoTokenizer.from_pretrained(model_path("encoder"))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tok) -> str:
    "A 2-layer, 32-wide random BERT saved with the bundled encoder's tokenizer (as tests/test_compare.py makes it)."
    d = tmp_path_factory.mktemp("tiny")
    tiny_bert(vocab_size=tok.vocab_size).save_pretrained(d); tok.save_pretrained(d)
    return str(d)


def _strategies():
    from ftlab.finetune import STRATEGIES
    return sorted(STRATEGIES)


@pytest.mark.parametrize("name", _strategies())
def test_every_strategy_runs_without_fits_deprecation(strict, toy, name):
    from ftlab.finetune import get_strategy
    r = get_strategy(name)(tiny_bert(), toy[0], None, max_steps=2, batch_size=32, lr=1e-3, logging=Logging(progress=False, plot=False))
    assert r.steps >= 1


def test_a_callers_group_goes_through_a_wrapper(strict, toy):
    "logging=Logging(every=5) through full_finetune: no 'not both', logged every 5 steps; optimization= keeps the strategy's schedule."
    from ftlab.finetune import full_finetune
    q = dict(max_steps=10, batch_size=16, lr=1e-3, precision="fp32")
    r = full_finetune(tiny_bert(), toy[0], None, logging=Logging(every=5, progress=False, plot=False), **q)
    assert r.history.step.tolist() == [5, 10]
    a = full_finetune(tiny_bert(), toy[0], None, logging=Logging(every=1, progress=False, plot=False), optimization=Optimization(weight_decay=0.0), **q)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        b = fit(tiny_bert(), toy[0], log_every=1, progress=False, plot=False, weight_decay=0.0, warmup=0.1, scheduler="linear", **q)
    pd.testing.assert_frame_equal(a.history, b.history)   # the caller's group with the strategy's warm-up: the same run


def test_a_callers_flat_key_still_works_and_only_it_warns(toy):
    from ftlab.concepts import budget_finetune
    from ftlab.finetune import full_finetune
    q = dict(max_steps=3, batch_size=16, lr=1e-3, precision="fp32")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        a = full_finetune(tiny_bert(), toy[0], None, progress=False, plot=False, log_every=1, **q)
    said = _said(w)
    assert len(said) == 1 and "write logging=Logging(every=1, progress=False, plot=False)" in said[0], said   # the caller's, not the strategy's warmup=
    b = full_finetune(tiny_bert(), toy[0], None, logging=Logging(every=1, progress=False, plot=False), **q)
    pd.testing.assert_frame_equal(a.history, b.history)
    with warnings.catch_warnings(record=True) as w:   # a wrapper with defaults of its own (progress=False, plot=False): they join the caller's flat key
        warnings.simplefilter("always")
        budget_finetune(tiny_bert(), toy[0], epochs=1, min_steps=2, batch_size=16, progress=True)
    said = _said(w)
    assert len(said) == 1 and "logging=Logging(progress=True, plot=False)" in said[0], said
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        budget_finetune(tiny_bert(), toy[0], epochs=1, min_steps=2, batch_size=16)
    assert _said(w) == []


def test_budget_finetune_and_continued_pretraining(strict, toy, tok):
    from datasets import Dataset
    from ftlab.concepts import budget_finetune
    from ftlab.domain import dapt
    from ftlab.mlm import continue_pretraining, tied_mlm_head
    budget_finetune(tiny_bert(), toy[0], toy[1], epochs=1, min_steps=2, batch_size=32, head_lr=1e-2, patience=1)
    budget_finetune(tiny_bert(), toy[0], epochs=1, min_steps=2, batch_size=32, head_lr=1e-2, optimization=Optimization(weight_decay=0.0))
    m = tiny_bert(vocab_size=tok.vocab_size)
    corpus = Dataset.from_list([{"input_ids": tok(s)["input_ids"], "attention_mask": [1] * len(tok(s)["input_ids"])}
                                for s in ["a wonderful film", "dull and far too long", "the plot makes no sense at all"] * 4])
    continue_pretraining(m, tied_mlm_head(m), corpus, tok, steps=2, batch_size=4, lr=1e-3)
    d = dapt(m, corpus, tok, head_steps=1, steps=1, batch_size=4)
    assert d["head"].steps == 1 and d["mlm"].steps == 1


def test_ensemble_and_instance_wrappers(strict, toy):
    from ftlab.engine import Collator
    from ftlab.ensemble import HiddenCache, TopOnHidden, hidden_states, train_member, train_top
    from ftlab.instance import NeighbourIndex, union_finetune
    train_member("full", toy[0], seed=0, make_model=tiny_bert, cache_dir=False, lr=1e-2, max_steps=1, batch_size=32)
    m = tiny_bert(seed=4).eval(); cache = HiddenCache(*hidden_states(m, toy[0], 1, precision="fp32"), toy[0]["labels"])
    assert train_top(TopOnHidden(m, 1), cache, lr=1e-2, seed=0, epochs=1, batch_size=16).member_info["steps"] == 4
    pool, queries = toy[0], toy[1].select(range(4))
    y = np.asarray(pool["labels"]); rows = np.r_[np.flatnonzero(y == 0)[:2], np.flatnonzero(y == 1)[:2]]   # both classes
    nb = np.tile(rows, (4, 1))
    u = union_finetune(tiny_bert(), pool, queries, nb, k=4, lr=1e-2, epochs=1, batch_size=8, precision="fp32")
    assert u["n_train"] == 4


def test_compare_budget_and_train_command(strict, tiny_dir, tmp_path):
    "`ftlab compare` (the head, full fine-tuning, TAPT: continued pretraining then fine-tuning; its calibration) and `ftlab train`."
    import ftlab.compare as C
    from ftlab.budget import _step_seconds, calibrate
    from ftlab.cli import main
    rng = np.random.default_rng(0)
    df = pd.DataFrame([(" ".join(rng.choice("the film plot story was quite".split(), 4)) + (" great" if y else " dull"), "pos" if y else "neg")
                       for y in rng.integers(0, 2, 60)], columns=["text", "label"])
    p = tmp_path / "d.csv"; df.to_csv(p, index=False)
    assert C.compare_main(["--file", str(p), "--model", tiny_dir, "--strategies", "head,full,tapt", "--seeds", "1", "--steps", "2",
                           "--max-length", "16", "--batch-size", "16", "--out", str(tmp_path / "cmp")]) == 0
    d, names, _ = C.load_labelled(p)
    pool = C.make_pool(d, names, tiny_dir, 16, 2, 16)
    assert calibrate(pool)["step_s"] > 0 and _step_seconds("full", pool) > 0
    assert main(["train", "--file", str(p), "--strategy", "full", "--model", tiny_dir, "--out", str(tmp_path / "run"),
                 "--n-train", "0", "--n-test", "0", "--max-length", "16", "--epochs", "1"]) == 0

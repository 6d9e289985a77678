"""The chapter's claims on two training seeds, in the notebook's fast-profile configuration.

2,000 training / 500 fixed test snippets of the movie domain, one epoch through the encoder for every strategy
(head only: ten cheap epochs on cached [CLS] vectors), MiniLM, CPU, the learning rates of `profile_settings()`.
The asserts are on accuracy with margins the measured runs support and on counted work (steps, trainable
parameters); nothing here is timed (speed lives in bench/), and LoRA is not ranked against full fine-tuning:
one epoch at one learning rate per method cannot separate the method from the budget. Takes about 3 minutes
on 2 idle cores (much longer on a busy machine).
"""
import math
import os

import pytest

from ftlab.finetune import compare, profile_settings

# pytest-timeout is a guard against hangs, not a speed test: six one-epoch runs take ~3 minutes on 2 idle cores and
# ran past the suite's 900 s per test beside other work (load 5 on 2 cores); an hour still catches a hang.
pytestmark = pytest.mark.timeout(3600)


@pytest.fixture(scope="module")
def boards():
    os.environ.setdefault("FTLAB_PROFILE", "fast")
    ps = profile_settings()
    return {s: compare(["head", "lora", "full"], "sentiment/movie", n_train=2000, n_test=500, epochs=1, max_length=64,
                       seed=s, overrides=ps["overrides"], verbose=True).set_index("strategy") for s in (0, 1)}


@pytest.mark.parametrize("seed", [0, 1])
def test_claims_hold_on_each_seed(boards, seed):
    b = boards[seed]
    acc = b.accuracy
    assert acc["lora"] >= acc["head"] + 0.03, acc.to_dict()         # LoRA clearly above head-only
    assert acc["full"] >= acc["head"] + 0.05, acc.to_dict()         # full fine-tuning clearly above head-only
    assert acc["full"] >= 0.79, acc.to_dict()
    steps = math.ceil(2000 / 32)
    assert b.loc["full", "steps"] == b.loc["lora", "steps"] == steps and b.loc["head", "steps"] == 10 * steps
    assert b.loc["lora", "trainable_pct"] < 2.0 and b.loc["head", "trainable_pct"] < 1.0


def test_mean_over_seeds(boards):
    mean = sum(b.accuracy for b in boards.values()) / len(boards)
    # 0.79, as on each seed: a 500-snippet test set gives each run a ±0.035 interval, so the mean of two seeds cannot
    # tell 0.80 from 0.799 (measured 0.799 under bf16 autocast, 0.80+ in fp32)
    assert mean["full"] >= 0.79 and mean["head"] < mean["lora"] and mean["head"] < mean["full"], mean.to_dict()

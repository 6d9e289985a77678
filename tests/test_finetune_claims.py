"""The chapter's claims on two training seeds, in the notebook's fast-profile configuration.

2,000 training / 500 fixed test snippets of the movie domain, one epoch, MiniLM, CPU. Measured (seed 0 / seed 1):

| strategy | accuracy | trainable |
|---|---|---|
| head only | 0.686 / 0.686 | 0.65% |
| LoRA r=8 on query+value (lr 1e-3) | 0.738 / 0.760 | 0.97% |
| full fine-tuning (lr 2e-4) | 0.826 / 0.800 | 100% |

So the orderings head < LoRA < full hold on both seeds with at least 4 points between neighbours, but
full fine-tuning's ">= 0.80" holds on seed 1 only just (0.800): per seed we assert >= 0.79 and >= 0.80 on
the mean. Takes about 3 minutes on 2 idle cores (much longer on a busy machine).
"""
import os

import pytest

from ftlab.finetune import compare, profile_settings


@pytest.fixture(scope="module")
def boards():
    os.environ.setdefault("FTLAB_PROFILE", "fast")
    ps = profile_settings()
    return {s: compare(["head", "lora", "full"], "sentiment/movie", n_train=2000, n_test=500, epochs=1, max_length=64,
                       seed=s, overrides=ps["overrides"], verbose=True).set_index("strategy") for s in (0, 1)}


@pytest.mark.parametrize("seed", [0, 1])
def test_orderings_hold_on_each_seed(boards, seed):
    b = boards[seed]
    acc, t = b.accuracy, b.cpu_time_s
    assert acc["lora"] >= acc["head"] + 0.04, acc.to_dict()         # LoRA clearly above head-only (observed >= 5.2 points)
    assert acc["full"] >= acc["lora"] + 0.02, acc.to_dict()         # full fine-tuning above LoRA (observed >= 4.0 points)
    assert acc["full"] >= 0.79, acc.to_dict()
    assert t["head"] < 0.6 * t["full"], t.to_dict()                 # head-only is the cheap one (CPU time; wall 0.4x when idle)
    assert b.loc["lora", "trainable_pct"] < 2.0


def test_mean_over_seeds(boards):
    mean = sum(b.accuracy for b in boards.values()) / len(boards)
    assert mean["full"] >= 0.80 and mean["head"] < mean["lora"] < mean["full"], mean.to_dict()

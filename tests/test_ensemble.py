"""ftlab.ensemble: exact weight averaging, combiners' guarantees (Jensen, greedy soup), calibration, caching and errors."""
import math

import numpy as np
import pytest
import torch

from ftlab.engine import predict_logits
from ftlab.ensemble import (accuracy, average_weights, barrier, disagreement, ece, fingerprint, fit_weights, greedy_soup,
                            hard_vote, inference_flops, interpolate, log_loss, path_scores, permute_ffn, reliability,
                            soft_average, soup, stack, train_member)
from ftlab.testing import tiny_bert, toy_dataset


@pytest.fixture(scope="module")
def toy():
    return toy_dataset(64, seed=2)


def _probs(x): return x.double().softmax(-1).numpy()


def test_soup_weights_are_the_members_mean():
    ms = [tiny_bert(seed=s) for s in range(4)]
    w = [0.1, 0.2, 0.3, 0.4]
    sd = average_weights([m.state_dict() for m in ms], w)
    for k, v in sd.items():
        if not torch.is_floating_point(v): assert torch.equal(v, ms[0].state_dict()[k]); continue
        exact = sum(wi * m.state_dict()[k].double() for wi, m in zip(w, ms))
        # one float32 rounding of the float64 mean: at most half an ulp of the largest magnitude
        assert (v.double() - exact).abs().max() <= 2 ** -24 * exact.abs().max() * 1.0001 + 1e-38, k


def test_soup_of_one_is_that_member(toy):
    m = tiny_bert(seed=1).eval()
    one = soup([m])
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in one.state_dict().items())
    assert torch.equal(predict_logits(one, toy), predict_logits(m, toy))


def test_interpolation_ends_are_the_models():
    a, b = tiny_bert(seed=1), tiny_bert(seed=2)
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in interpolate(a, b, 0.0).state_dict().items())
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in interpolate(a, b, 1.0).state_dict().items())
    with pytest.raises(ValueError, match=r"\[0, 1\]"): interpolate(a, b, -0.1)


def test_averaging_refuses_other_shapes_and_keys():
    with pytest.raises(ValueError, match="cannot be averaged"):
        average_weights([tiny_bert().state_dict(), tiny_bert(num_labels=3).state_dict()])
    sd = tiny_bert().state_dict(); sd2 = dict(sd); sd2.pop("classifier.bias")
    with pytest.raises(ValueError, match="other parameters"): average_weights([sd, sd2])
    with pytest.raises(ValueError, match="at least one"): average_weights([])


@pytest.mark.parametrize("seed", range(10))
def test_soft_average_log_loss_is_at_most_the_members_mean(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 200, 3, generator=g) * 4; y = torch.randint(0, 3, (200,), generator=g).numpy()
    w = torch.rand(4, generator=g).numpy()
    wn = w / w.sum()
    assert log_loss(soft_average(x, w), y) <= sum(wi * log_loss(_probs(m), y) for wi, m in zip(wn, x)) + 1e-12


def test_hard_vote_and_weights():
    lg = torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]], [[0.0, 2.0]]])
    assert hard_vote(lg).tolist() == [1]
    assert hard_vote(lg, [10, 1, 1]).tolist() == [0]
    with pytest.raises(ValueError, match="non-negative"): soft_average(lg, [1, -1, 1])
    with pytest.raises(ValueError, match="one weight per member"): soft_average(lg, [1, 1])


def test_fit_weights_prefers_the_informative_member():
    y = np.array([0, 1] * 50)
    good = torch.tensor(np.eye(2)[y] * 3.0)
    bad = torch.tensor(np.eye(2)[1 - y] * 3.0)
    w = fit_weights(torch.stack([good, bad]), y)
    assert abs(w.sum() - 1) < 1e-9 and w[0] > 0.95


def test_stacking_is_cross_fitted():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    noise = torch.tensor(rng.normal(size=(3, 200, 2)))   # members that know nothing
    oof, _ = stack(noise, y, noise)
    # out-of-fold predictions of pure noise are near chance; in-sample ones would be optimistic
    assert 0.3 < accuracy(oof, y) < 0.7


def test_ece_and_reliability():
    p = np.stack([np.full(100, 0.9), np.full(100, 0.1)], 1)
    y = np.r_[np.zeros(90), np.ones(10)].astype(int)
    assert abs(ece(p, y)) < 1e-12                               # 90% sure and 90% right
    r = reliability(p, y); assert r.n.sum() == 100 and r.loc[r.n > 0, "bin"].tolist() == [9]
    assert math.isclose(log_loss(np.array([[0.25, 0.75]]), [1]), -math.log(0.75), rel_tol=1e-12)
    with pytest.raises(ValueError, match="one label per example"): ece(p, y[:5])


def test_greedy_soup_is_no_worse_than_the_best_member_on_its_score(toy):
    ms = [tiny_bert(seed=s) for s in range(4)]
    def score(m): return accuracy(predict_logits(m, toy).numpy(), toy["labels"])
    g, chosen, log = greedy_soup(ms, score)
    assert score(g) >= max(score(m) for m in ms)
    assert chosen[0] == int(np.argmax([score(m) for m in ms])) and log.kept.iloc[0]
    with pytest.raises(ValueError, match="one score per member"): greedy_soup(ms, score, [0.5])


def test_permuted_member_is_the_same_function(toy):
    m = tiny_bert(seed=5).eval()
    p = permute_ffn(m, seed=1)
    assert torch.allclose(predict_logits(p, toy), predict_logits(m, toy), atol=1e-5)
    k = "bert.encoder.layer.1.intermediate.dense.weight"
    assert not torch.equal(p.state_dict()[k], m.state_dict()[k])
    with pytest.raises(ValueError, match="no feed-forward block"): permute_ffn(torch.nn.Linear(2, 2))


def test_path_and_barrier(toy):
    a, b = tiny_bert(seed=1), tiny_bert(seed=2)
    path = path_scores(a, b, [0, 0.5, 1], dict(acc=lambda m: accuracy(predict_logits(m, toy).numpy(), toy["labels"])))
    assert path.alpha.tolist() == [0, 0.5, 1] and list(path.columns) == ["alpha", "acc"]
    import pandas as pd
    assert barrier(pd.DataFrame(dict(alpha=[0, 0.5, 1], loss=[1.0, 1.0, 1.0]))) == 0


def test_member_cache_round_trip(tmp_path):
    kw = dict(seed=0, make_model=tiny_bert, cache_dir=tmp_path, lr=1e-2, max_steps=3, batch_size=32)
    a = train_member("full", toy_dataset(96), **kw)
    b = train_member("full", toy_dataset(96), **kw)
    assert not a.member_info["cached"] and b.member_info["cached"]
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    c = train_member("full", toy_dataset(96), **(kw | dict(lr=2e-2)))   # another setting: another member
    assert not c.member_info["cached"] and c.member_info["key"] != a.member_info["key"]


def test_lora_member_is_merged_into_plain_weights(tmp_path):
    m = train_member("lora", toy_dataset(64), seed=0, make_model=tiny_bert, cache_dir=tmp_path, lr=1e-2, max_steps=2, batch_size=32,
                     target_modules=["query", "value"])
    assert set(m.state_dict()) == set(tiny_bert().state_dict())   # soupable with plain members


def test_disagreement_and_flops():
    lg = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])
    d = disagreement(lg, ["a", "b"])
    assert d.loc["a", "b"] == 0.5 and d.loc["a", "a"] == 0
    assert inference_flops(torch.nn.Linear(4, 2), 3) == 2 * 10 * 3
    assert fingerprint(dict(a=1, b=2)) == fingerprint(dict(b=2, a=1))


# --- issue 30: members on cached hidden states, metrics that see through a label prior -----------------------------------
from ftlab.engine import features
from ftlab.ensemble import HiddenCache, TopOnHidden, balanced_accuracy, hidden_states, macro_f1, top_features, top_logits, train_top


@pytest.mark.parametrize("k", [0, 1, 2])
def test_top_blocks_on_cached_states_are_the_full_model(toy, k):
    m = tiny_bert(seed=3).eval(); n = m.config.num_hidden_layers
    cache = HiddenCache(*hidden_states(m, toy, n - k, precision="fp32"), toy["labels"])
    ref = features(m, toy, pooling="mean", precision="fp32").double().numpy()
    assert np.allclose(top_features(TopOnHidden(m, k), cache, precision="fp32"), ref, atol=1e-5)


def test_train_top_copies_its_start_and_soups_average_it(toy):
    m = tiny_bert(seed=4).eval(); cache = HiddenCache(*hidden_states(m, toy, 1, precision="fp32"), toy["labels"])
    torch.manual_seed(0); start = TopOnHidden(m, 1); before = {k: v.clone() for k, v in start.state_dict().items()}
    a, b = (train_top(start, cache, lr=1e-2, seed=s, epochs=1, batch_size=16) for s in (0, 1))
    assert all(torch.equal(v, start.state_dict()[k]) for k, v in before.items()) and a.member_info["steps"] == 4
    mid = interpolate(a, b, 0.5)
    assert torch.allclose(mid.classifier.weight, (a.classifier.weight + b.classifier.weight) / 2, atol=1e-7)
    assert top_logits(mid, cache, precision="fp32").shape == (len(toy), 2)
    with pytest.raises(ValueError, match="between 0 and"): TopOnHidden(m, 3)
    with pytest.raises(ValueError, match="one hidden-state row"): HiddenCache(torch.zeros(3, 2, 4), torch.ones(3, 2), [0, 1])


def test_balanced_accuracy_and_macro_f1_see_through_the_prior():
    y = np.r_[np.ones(80), np.zeros(20)].astype(int)
    const = np.ones(100, dtype=int)
    assert accuracy(const, y) == 0.8 and balanced_accuracy(const, y) == 0.5
    assert math.isclose(macro_f1(const, y), (2 * 0.8 / 1.8) / 2, rel_tol=1e-12)
    assert balanced_accuracy(np.eye(2)[y], y) == 1.0 and macro_f1(y, y) == 1.0

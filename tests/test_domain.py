"""ftlab.domain: the formulas (CORAL, MMD, gradient reversal, the λ ramp, importance weights, the proxy A-distance)
checked against hand-computed cases and straightforward references in float64, and the methods through the real `fit`."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ftlab.domain import (METHODS, FeatureClassifier, adapt, adapted_features, alignment_loss, clip_normalise, coral_loss,
                          covariance, dann_lambda, dann_loss, domain_classifier, effective_sample_size, feature_dataset,
                          features_and_logits, gradient_reversal, importance_weights, median_bandwidth, mmd_loss,
                          proxy_a_distance, reweighted_loss)
from ftlab.engine import fit
from ftlab.testing import tiny_bert, toy_dataset


def mmd_reference(x, y, sigma2):
    "The biased squared MMD as the O(n²) double loop of its definition, in python floats (float64)."
    x, y = x.double().tolist(), y.double().tolist()
    k = lambda a, b: math.exp(-sum((p - q) ** 2 for p, q in zip(a, b)) / (2 * sigma2))
    mean_k = lambda A, B: sum(k(a, b) for a in A for b in B) / (len(A) * len(B))
    return mean_k(x, x) + mean_k(y, y) - 2 * mean_k(x, y)


def coral_reference(s, t):
    "‖C_s − C_t‖²_F / 4d² with numpy's covariance, in float64."
    d = s.shape[1]
    return float(((np.cov(s, rowvar=False) - np.cov(t, rowvar=False)) ** 2).sum() / (4 * d * d))


# --- gradient reversal and the ramp ---------------------------------------------------------------------------

@pytest.mark.parametrize("lam", [0.0, 0.25, 1.0, 3.0])
def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward(lam):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 5, dtype=torch.float64, generator=g, requires_grad=True)
    up = torch.randn(7, 5, dtype=torch.float64, generator=g)
    y = gradient_reversal(x, lam)
    assert torch.equal(y, x)
    y.backward(up)
    assert torch.equal(x.grad, -lam * up)   # exact: one multiplication by a float64 scalar


def test_gradient_reversal_through_a_module_reverses_the_plain_gradient():
    h = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    G = domain_classifier(4, 8, seed=0).double()
    d = torch.tensor([0.0, 1.0] * 5, dtype=torch.float64)
    F.binary_cross_entropy_with_logits(G(h).squeeze(-1), d).backward(); plain = h.grad.clone(); h.grad = None
    F.binary_cross_entropy_with_logits(G(gradient_reversal(h, 0.4)).squeeze(-1), d).backward()
    assert torch.allclose(h.grad, -0.4 * plain, rtol=0, atol=1e-15)


def test_dann_lambda_ramp():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1, abs=1e-15)
    ps = np.linspace(0, 1, 11)
    vals = [dann_lambda(p) for p in ps]
    assert all(a < b for a, b in zip(vals, vals[1:])) and vals[-1] < 1
    assert dann_lambda(0.3, gamma=1.0) == pytest.approx(math.tanh(0.15), abs=1e-15)   # 2σ(γp) − 1 = tanh(γp/2)


# --- CORAL ---------------------------------------------------------------------------------------------------

def test_coral_hand_computed():
    s = torch.tensor([[0., 0.], [2., 0.], [0., 2.], [2., 2.]])   # covariance diag(4/3, 4/3)
    t = torch.tensor([[0., 0.], [1., 1.], [2., 2.], [3., 3.]])   # covariance 5/3 everywhere
    assert torch.allclose(covariance(s), torch.tensor([[4 / 3, 0.], [0., 4 / 3]]))
    assert coral_loss(s, t).item() == pytest.approx(52 / 9 / 16, rel=1e-6)   # (2·(1/3)² + 2·(5/3)²) / (4·2²)


def test_coral_matches_numpy_and_is_zero_for_the_same_covariance():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(30, 6, generator=g, dtype=torch.float64), torch.randn(20, 6, generator=g, dtype=torch.float64) * 2
    assert coral_loss(s, t).item() == pytest.approx(coral_reference(s.numpy(), t.numpy()), rel=1e-6)   # computed in float32
    assert coral_loss(s, s + 3.0).item() == pytest.approx(0.0, abs=1e-10)   # a shift leaves covariances alone


def test_coral_and_mmd_reject_bad_shapes():
    with pytest.raises(ValueError, match="differ in width"): coral_loss(torch.ones(4, 2), torch.ones(4, 3))
    with pytest.raises(ValueError, match="differ in width"): mmd_loss(torch.ones(4, 2), torch.ones(4, 3))
    with pytest.raises(ValueError, match="at least 2 rows"): coral_loss(torch.ones(1, 2), torch.ones(4, 2))


# --- MMD -----------------------------------------------------------------------------------------------------

def test_mmd_matches_the_quadratic_reference():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(13, 4, generator=g), torch.randn(19, 4, generator=g) + 0.7
    for s2 in (0.5, 2.0, 10.0):
        assert mmd_loss(x, y, sigma2=s2).item() == pytest.approx(mmd_reference(x, y, s2), abs=1e-5)
    s2 = float(median_bandwidth(x, y))
    assert mmd_loss(x, y).item() == pytest.approx(mmd_reference(x, y, s2), abs=1e-5)


def test_mmd_hand_computed_and_identical():
    assert mmd_loss(torch.zeros(1, 1), torch.ones(1, 1), sigma2=0.5).item() == pytest.approx(2 - 2 * math.exp(-1), abs=1e-6)
    x = torch.randn(16, 3)
    assert mmd_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert mmd_loss(x, x.flip(0)).item() == pytest.approx(0.0, abs=1e-6)   # the same set of points in another order


def test_median_bandwidth_is_the_median_squared_distance():
    z = torch.tensor([[0.], [1.], [3.]])               # squared distances 1, 9, 4 -> median 4
    assert median_bandwidth(z).item() == pytest.approx(4.0)
    assert median_bandwidth(z[:2], z[2:]).item() == pytest.approx(4.0)


def test_mmd_is_larger_for_shifted_than_for_same_distribution():
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(200, 5, generator=g) for _ in range(3))
    assert mmd_loss(a, b + 1.0) > 5 * mmd_loss(a, c)


# --- importance weights ----------------------------------------------------------------------------------------

def test_clip_normalise_hand_computed():
    w = clip_normalise([1, 1, 1, 1, 100], clip=2.0)
    assert w.mean() == pytest.approx(1.0) and w.max() == pytest.approx(2.0)
    assert np.allclose(w[:4], 0.75)                    # 4a + 2 = 5
    with pytest.raises(ValueError, match="clip must be"): clip_normalise([1, 2], clip=0.5)
    with pytest.raises(ValueError, match="non-negative"): clip_normalise([1, -1])


def test_importance_weights_favour_source_points_near_the_target():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + [1.5, 0]
    w = importance_weights(s, t, clip=5.0)
    assert w.mean() == pytest.approx(1.0) and w.max() <= 5.0 + 1e-9 and (w >= 0).all()
    assert np.corrcoef(s[:, 0], w)[0, 1] > 0.5
    assert effective_sample_size(w) < 0.9 * len(w)
    assert effective_sample_size(importance_weights(s, rng.normal(size=(300, 2)))) > 0.9 * len(s)


def test_reweighted_loss_is_the_weighted_mean():
    net = FeatureClassifier(6, 4, seed=0).eval()
    b = {"features": torch.randn(5, 6), "labels": torch.tensor([0, 1, 1, 0, 1]), "weight": torch.tensor([0., 1., 2., 1., 1.])}
    ce = F.cross_entropy(net(features=b["features"]).logits, b["labels"], reduction="none")
    loss, logs = reweighted_loss()(net, b, None)
    assert loss.item() == pytest.approx((b["weight"] * ce).mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="no 'weight' column"): reweighted_loss()(net, {"features": b["features"], "labels": b["labels"]}, None)


# --- proxy A-distance ----------------------------------------------------------------------------------------

def test_proxy_a_distance_extremes():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    assert proxy_a_distance(a, b) < 0.3                # the same distribution: sampling noise only
    assert proxy_a_distance(a, b + 4.0) == 2.0         # separable
    assert 0.0 <= proxy_a_distance(a, b + 0.3) <= 2.0
    with pytest.raises(ValueError, match="at least 4 rows"): proxy_a_distance(a[:2], b)


# --- the methods through fit ---------------------------------------------------------------------------------

def test_features_and_logits_matches_the_models_own_forward():
    bert = tiny_bert(seed=0).eval()
    b = {"input_ids": torch.tensor([[1, 9, 10, 11, 5]]), "attention_mask": torch.ones(1, 5, dtype=torch.long), "labels": torch.tensor([1])}
    h, lg = features_and_logits(bert, b)
    assert h.shape == (1, 32) and torch.allclose(lg, bert(**b).logits, atol=1e-6)
    net = FeatureClassifier(6, 3, seed=0).eval(); x = torch.randn(4, 6)
    assert torch.allclose(adapted_features(net, feature_dataset(x)), net.encode(x), atol=1e-6)


def test_dann_inside_fit_trains_the_domain_classifier_with_the_ramp():
    src, tgt = toy_dataset(64, seed=0), toy_dataset(64, seed=1).remove_columns("labels")
    dom = domain_classifier(32, seed=0); before = [p.detach().clone() for p in dom.parameters()]
    r = fit(tiny_bert(seed=0), src, loss_fn=dann_loss(), streams={"target": tgt}, modules={"domain": dom}, max_steps=5,
            batch_size=16, lr=1e-3, log_every=1, progress=False, plot=False, precision="fp32")
    tr = r.history[r.history.split == "train"]
    assert np.allclose(tr.grl_lambda.values, [dann_lambda(s / 5) for s in range(5)], atol=1e-12)
    assert any(not torch.equal(a, b) for a, b in zip(r.modules["domain"].parameters(), before))
    assert tr.domain_loss.notna().all() and tr.domain_acc.between(0, 1).all()


def test_losses_name_the_missing_stream_or_module():
    src = toy_dataset(32, seed=0)
    with pytest.raises(ValueError, match="no stream 'target'"):
        fit(tiny_bert(), src, loss_fn=alignment_loss("coral"), max_steps=1, progress=False, plot=False)
    with pytest.raises(ValueError, match="no extra module 'domain'"):
        fit(tiny_bert(), src, loss_fn=dann_loss(), streams={"target": src.remove_columns("labels")}, max_steps=1, progress=False, plot=False)
    with pytest.raises(ValueError, match="Unknown penalty"): alignment_loss("wasserstein")


@pytest.mark.parametrize("method", METHODS)
def test_adapt_runs_every_method_on_features(method):
    g = torch.Generator().manual_seed(0)
    src = feature_dataset(torch.randn(64, 8, generator=g), labels=[0, 1] * 32, weights=[1.0] * 64)
    tgt = feature_dataset(torch.randn(40, 8, generator=g) + 1.0, labels=[1] * 40)   # labels present: adapt must drop them
    r = adapt(method, FeatureClassifier(8, 4, seed=0), src, tgt, seed=0, lr=1e-2, max_steps=4, batch_size=16, log_every=2,
              progress=False, plot=False)
    assert r.steps == 4 and r.history.loss.notna().all()
    logged = {"coral": "coral", "mmd": "mmd", "dann": "domain_loss", "reweight": "mean_weight"}.get(method)
    if logged: assert logged in r.history.columns
    if method == "dann": assert "domain" in r.modules


def test_adapt_errors():
    src = feature_dataset(torch.randn(16, 4), labels=[0, 1] * 8)
    with pytest.raises(ValueError, match="Unknown method"): adapt("dan", FeatureClassifier(4, 2), src)
    with pytest.raises(ValueError, match="needs target_ds"): adapt("mmd", FeatureClassifier(4, 2), src)
    with pytest.raises(ValueError, match="no 'weight' column"): adapt("reweight", FeatureClassifier(4, 2), src)

"Edge cases, bad inputs and properties of `ftlab.losses` and `ftlab.optim` (the notebooks check values against PyTorch)."
import itertools, math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st, HealthCheck

from ftlab.losses import (CRF, bce_with_logits, combined_loss, crf_nll, cross_entropy, kl_estimate, kl_exact, log_softmax,
                          mae, masked_lm_loss, mse, pack_left, viterbi_decode)
from ftlab.optim import SGD, Adam, AdamW

fast = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])




@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    "Tiny tensors: one thread is faster. Restored afterwards, so other test modules keep torch's default."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------- bad inputs: clear errors
@pytest.mark.parametrize("labels, msg", [
    (torch.tensor([0.0, 1.0, 2.0]), "integer class indices"),      # float labels
    (torch.tensor([True, False, True]), "integer class indices"),  # bool labels
    (torch.tensor([0, 1, 3]), "out of range"),                     # 3 classes: 3 is too big
    (torch.tensor([0, -1, 2]), "out of range"),                    # negative, not ignore_index
    (torch.tensor([0, 1]), "shape mismatch"),                      # wrong length
    (torch.tensor([[0, 1, 2]]), "shape mismatch"),                 # wrong rank
])
def test_cross_entropy_bad_labels(labels, msg):
    with pytest.raises(ValueError, match=msg): cross_entropy(torch.randn(3, 3), labels)

def test_error_messages_say_what_was_seen():
    with pytest.raises(ValueError) as e: cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 7, 2]))
    assert "[0, 2]" in str(e.value) and "7" in str(e.value)
    with pytest.raises(ValueError) as e: cross_entropy(torch.randn(4, 3), torch.zeros(5, dtype=torch.long))
    assert "(4, 3)" in str(e.value) and "(5,)" in str(e.value) and "(4,)" in str(e.value)
    with pytest.raises(ValueError) as e: cross_entropy(torch.randn(2, 3), torch.tensor([0.0, 1.0]))
    assert "torch.float32" in str(e.value) and ".long()" in str(e.value)

def test_cross_entropy_bad_options():
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="floating"): cross_entropy(torch.randint(0, 3, (4, 3)), y)  # int logits
    with pytest.raises(ValueError, match="label_smoothing"): cross_entropy(z, y, label_smoothing=1.5)
    with pytest.raises(ValueError, match="weight"): cross_entropy(z, y, weight=torch.ones(4))
    with pytest.raises(ValueError, match="reduction"): cross_entropy(z, y, reduction="avg")
    with pytest.raises(TypeError, match="Tensor"): cross_entropy(z, [0, 1, 2, 0])

def test_regression_losses_refuse_broadcasting():
    for f in (mse, mae):
        with pytest.raises(ValueError, match=r"shape mismatch.*\(8, 1\).*\(8,\)"): f(torch.randn(8, 1), torch.randn(8))
        with pytest.raises(ValueError, match="floating"): f(torch.arange(8), torch.randn(8))

def test_bce_bad_inputs():
    with pytest.raises(ValueError, match="float"): bce_with_logits(torch.randn(4), torch.tensor([0, 1, 1, 0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"): bce_with_logits(torch.randn(4), torch.tensor([0.0, 1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="shape mismatch"): bce_with_logits(torch.randn(4, 1), torch.rand(4))

def test_masked_lm_bad_inputs():
    with pytest.raises(ValueError, match="batch, seq, vocab"): masked_lm_loss(torch.randn(4, 10), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"): masked_lm_loss(torch.randn(2, 3, 5), torch.tensor([[1, -100, 5], [0, 0, 0]]))

def test_crf_bad_inputs():
    em, tr, s = torch.randn(2, 4, 3), torch.zeros(3, 3), torch.zeros(3)
    tags = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="batch, seq, num_tags"): crf_nll(em[0], tags, tr, s, s)
    with pytest.raises(ValueError, match=r"transitions must be \(3, 3\)"): crf_nll(em, tags, torch.zeros(4, 4), s, s)
    with pytest.raises(ValueError, match="tags out of range"): crf_nll(em, tags + 3, tr, s, s)
    with pytest.raises(ValueError, match="integer"): crf_nll(em, tags.float(), tr, s, s)
    with pytest.raises(ValueError, match="left-aligned"): crf_nll(em, tags, tr, s, s, mask=torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1]]).bool())
    with pytest.raises(ValueError, match="mask must be"): crf_nll(em, tags, tr, s, s, mask=torch.ones(2, 5, dtype=torch.bool))

def test_kl_and_combined_bad_inputs():
    with pytest.raises(ValueError, match="kind"): kl_estimate(torch.zeros(3), torch.zeros(3), "k4")
    with pytest.raises(ValueError, match="shape mismatch"): kl_exact(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="lam"): combined_loss(torch.tensor(1.0), torch.tensor(1.0), lam=-0.1)
    with pytest.raises(ValueError, match="scalar"): combined_loss(torch.ones(3), torch.tensor(1.0), lam=0.1)

def test_optimizer_bad_hyperparameters():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError): SGD(p, lr=-1)
    with pytest.raises(ValueError, match="Nesterov"): SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"): Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError): AdamW(p, weight_decay=-0.1)


# ---------------------------------------------------------------- edge cases
def test_all_ignored_is_nan_like_torch():
    z, y = torch.randn(3, 4), torch.full((3,), -100)
    assert cross_entropy(z, y).isnan() and F.cross_entropy(z, y).isnan()
    assert cross_entropy(z, y, reduction="sum").item() == 0.0
    assert masked_lm_loss(torch.randn(2, 3, 5), torch.full((2, 3), -100)).isnan()

def test_empty_batch():
    z, y = torch.randn(0, 4), torch.zeros(0, dtype=torch.long)
    assert cross_entropy(z, y, reduction="sum").item() == 0.0 and cross_entropy(z, y).isnan()  # torch: nan too
    assert F.cross_entropy(z, y).isnan()

def test_extreme_logits_float32():
    z = torch.tensor([[1e4, -1e4], [-1e4, 1e4], [3e38, -3e38]], requires_grad=True)
    y = torch.tensor([0, 0, 0])
    ref = F.cross_entropy(z, y, reduction="none")
    out = cross_entropy(z, y, reduction="none")
    assert torch.isfinite(out).all() and torch.allclose(out, ref)
    out.sum().backward(); assert torch.isfinite(z.grad).all()
    b = bce_with_logits(torch.tensor([1e4, -1e4, -3e38]), torch.tensor([0.0, 1.0, 1.0]), reduction="none")
    assert torch.isfinite(b[:2]).all() and torch.allclose(b[:2], torch.tensor([1e4, 1e4]))

def test_custom_ignore_index_and_smoothing_with_ignored():
    z, y = torch.randn(6, 5, dtype=torch.float64), torch.tensor([0, 4, 7, 2, 7, 1])
    for ls in (0.0, 0.3):
        assert torch.allclose(cross_entropy(z, y, ignore_index=7, label_smoothing=ls),
                              F.cross_entropy(z, y, ignore_index=7, label_smoothing=ls))

def test_crf_single_token_and_empty_rows():
    crf = CRF(4)
    em = torch.randn(3, 5, 4)
    labels = torch.full((3, 5), -100); labels[0, 2] = 1; labels[1, :] = torch.tensor([0, 1, 2, 3, 0])
    loss = crf(em, labels, reduction="none")
    assert loss[2].item() == 0.0 and (loss[:2] > 0).all()
    assert crf.decode(em, labels != -100)[2] == [] and len(crf.decode(em, labels != -100)[0]) == 1
    assert crf(em, torch.full((3, 5), -100)).item() == 0.0  # nothing to score: 0, not nan

def test_pack_left_is_stable():
    mask = torch.tensor([[0, 1, 0, 1, 1], [1, 0, 0, 0, 1]]).bool()
    x = torch.arange(10).view(2, 5)
    m, px = pack_left(mask, x)
    assert m.tolist() == [[True, True, True, False, False], [True, True, False, False, False]]
    assert px[0, :3].tolist() == [1, 3, 4] and px[1, :2].tolist() == [5, 9]


# ---------------------------------------------------------------- properties (hypothesis)
@fast
@given(n=st.integers(1, 6), c=st.integers(2, 6), scale=st.floats(0.01, 1e3), ls=st.floats(0, 1), seed=st.integers(0, 10_000))
def test_ce_nonnegative_and_matches_torch(n, c, scale, ls, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, c, (n,), generator=g)
    out = cross_entropy(z, y, label_smoothing=ls, reduction="none")
    assert (out >= -1e-9).all()
    assert torch.allclose(out, F.cross_entropy(z, y, label_smoothing=ls, reduction="none"), rtol=1e-9, atol=1e-9)

@fast
@given(c=st.integers(2, 8), seed=st.integers(0, 10_000))
def test_ce_gradient_is_softmax_minus_onehot(c, seed):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(4, c, generator=g, dtype=torch.float64) * 5).requires_grad_()
    y = torch.randint(0, c, (4,), generator=g)
    cross_entropy(z, y, reduction="sum").backward()
    assert torch.allclose(z.grad, z.detach().softmax(-1) - F.one_hot(y, c).double(), atol=1e-12)
    assert torch.allclose(z.grad.sum(-1), torch.zeros(4, dtype=torch.float64), atol=1e-12)

@fast
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 100))
def test_log_softmax_normalises(seed, scale):
    z = torch.randn(3, 7, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    assert torch.allclose(torch.logsumexp(log_softmax(z), -1), torch.zeros(3, dtype=torch.float64), atol=1e-10)

@fast
@given(z=st.floats(-1e4, 1e4), y=st.floats(0, 1))
def test_bce_nonnegative_finite_and_matches_torch(z, y):
    zt, yt = torch.tensor([z], dtype=torch.float64), torch.tensor([y], dtype=torch.float64)
    out = bce_with_logits(zt, yt)
    assert torch.isfinite(out) and out.item() >= -1e-12
    assert torch.allclose(out, F.binary_cross_entropy_with_logits(zt, yt), rtol=1e-9, atol=1e-9)

def _brute(em, tr, s, e):
    L, K = em.shape
    seqs = list(itertools.product(range(K), repeat=L))
    S = torch.stack([s[q[0]] + sum(em[t, q[t]] for t in range(L)) + sum(tr[q[t - 1], q[t]] for t in range(1, L)) + e[q[-1]] for q in seqs])
    return seqs, S

@fast
@given(L=st.integers(1, 4), K=st.integers(2, 3), seed=st.integers(0, 10_000))
def test_crf_matches_brute_force_and_viterbi_is_consistent(L, K, seed):
    g = torch.Generator().manual_seed(seed)
    em, tr, s, e = (torch.randn(*sh, generator=g, dtype=torch.float64) * 2 for sh in [(1, L, K), (K, K), (K,), (K,)])
    seqs, S = _brute(em[0], tr, s, e)
    tags = torch.tensor([seqs[int(torch.randint(len(seqs), (1,), generator=g))]])
    nll = crf_nll(em, tags, tr, s, e)
    gold = S[seqs.index(tuple(tags[0].tolist()))]
    assert torch.allclose(nll, torch.logsumexp(S, 0) - gold, atol=1e-9)
    path, score = viterbi_decode(em, tr, s, e)
    assert torch.allclose(score[0], S.max(), atol=1e-9)
    # the Viterbi path has the smallest NLL of all paths, and NLL >= 0 for any path
    vit_nll = crf_nll(em, torch.tensor(path), tr, s, e)
    assert vit_nll.item() <= nll.item() + 1e-9 and vit_nll.item() >= -1e-9

@fast
@given(seed=st.integers(0, 10_000), spread=st.floats(0.0, 3.0))
def test_kl_exact_nonnegative_and_k3_samples_nonnegative(seed, spread):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(10, generator=g, dtype=torch.float64)
    lp, lq = log_softmax(a), log_softmax(a + spread * torch.randn(10, generator=g, dtype=torch.float64))
    assert kl_exact(lp, lq).item() >= -1e-12
    assert (kl_estimate(lp, lq, "k3") >= -1e-12).all() and (kl_estimate(lp, lq, "k2") >= 0).all()
    assert torch.allclose((lp.exp() * kl_estimate(lp, lq, "k1")).sum(), kl_exact(lp, lq))  # E_p[k1] = KL
    assert torch.allclose((lp.exp() * kl_estimate(lp, lq, "k3")).sum(), kl_exact(lp, lq))  # E_p[k3] = KL

def test_kl_exact_zero_probabilities_match_torch_distributions():
    "0·log 0 = 0: KL(softmax(0, 1, -inf) || uniform) = log 3 - H(p), as torch.distributions.kl_divergence gives; the reverse is +inf."
    from torch.distributions import Categorical, kl_divergence
    lp = log_softmax(torch.tensor([0.0, 1.0, -math.inf], dtype=torch.float64))
    lu = torch.full((3,), -math.log(3), dtype=torch.float64)
    want = kl_divergence(Categorical(logits=lp), Categorical(logits=lu)).item()
    assert want == pytest.approx(0.5164091798, abs=1e-9)
    assert kl_exact(lp, lu).item() == pytest.approx(want, abs=1e-12)
    assert kl_exact(lp, lp).item() == 0.0
    assert kl_exact(lu, lp).item() == math.inf  # the reference gives a class 0 that the policy picks: +inf, not NaN

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(5))
def test_kl_exact_with_neg_inf_matches_torch_kl_divergence_batched_with_gradients(seed, dtype):
    """Random `-inf` logits on the policy side, the reference side or both, in a (3, 4, 7) batch, against
    `torch.distributions.kl_divergence`. Its own gradient is NaN wherever the policy has a `-inf` (it multiplies
    0 by -inf in the backward pass), so the gradient reference puts -1e4 instead, which gives the same
    distributions (exp underflows to exactly 0) and the same values."""
    from torch.distributions import Categorical, kl_divergence
    g = torch.Generator().manual_seed(seed)
    a, b = (torch.randn(3, 4, 7, generator=g, dtype=dtype, requires_grad=True) for _ in range(2))
    za, zb = torch.rand(3, 4, 7, generator=g) < 0.3, torch.rand(3, 4, 7, generator=g) < 0.3
    za[..., 0] = zb[..., 0] = False                      # every row keeps at least one class on both sides
    ours = kl_exact(log_softmax(a.masked_fill(za, -math.inf)), log_softmax(b.masked_fill(zb, -math.inf)))
    ref = kl_divergence(Categorical(logits=a.masked_fill(za, -math.inf)), Categorical(logits=b.masked_fill(zb, -math.inf)))
    assert not ours.isnan().any()
    finite = ~(~za & zb).any(-1)                          # finite unless the policy picks a class the reference never does
    assert torch.equal(ours.isinf(), ~finite) and (ours[~finite] == math.inf).all() and (ref[~finite] == math.inf).all()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(ours[finite], ref[finite], atol=tol, rtol=tol)
    ga, gb = torch.autograd.grad(torch.where(finite, ours, 0.0).sum(), (a, b))  # rows left out never send back a NaN
    assert ga.isfinite().all() and gb.isfinite().all()
    ref_big = kl_divergence(Categorical(logits=a.masked_fill(za, -1e4)), Categorical(logits=b.masked_fill(zb, -1e4)))
    assert torch.allclose(ref_big[finite], ref[finite], atol=tol, rtol=tol)
    ra, rb = torch.autograd.grad(ref_big[finite].sum(), (a, b))
    assert torch.allclose(ga, ra, atol=tol, rtol=tol) and torch.allclose(gb, rb, atol=tol, rtol=tol)

def test_combined_loss():
    a, b = torch.tensor(2.0, requires_grad=True), torch.tensor(3.0, requires_grad=True)
    out = combined_loss(a, b, lam=0.5)
    assert out.item() == pytest.approx(3.5)
    out.backward(); assert a.grad.item() == 1.0 and b.grad.item() == 0.5
    assert combined_loss(a, None, lam=0.0) is a  # no pretraining term: just the task loss


# ---------------------------------------------------------------- optimizers
@pytest.mark.parametrize("mine, ref, kw", [
    (SGD, torch.optim.SGD, dict(lr=0.1)),
    (SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=0.01)),
    (SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.8, nesterov=True)),
    (Adam, torch.optim.Adam, dict(lr=1e-2, weight_decay=0.05)),
    (AdamW, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6)),
])
def test_optimizer_matches_torch_with_param_groups(mine, ref, kw):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    nets = [net, __import__("copy").deepcopy(net)]
    groups = lambda m: [dict(params=m[0].parameters()), dict(params=m[2].parameters(), lr=kw["lr"] / 3)]
    opts = [mine(groups(nets[0]), **kw), ref(groups(nets[1]), **kw)]
    x, y = torch.randn(64, 5, dtype=torch.float64), torch.randint(0, 3, (64,))
    for step in range(100):
        for m, o in zip(nets, opts):
            o.zero_grad(); F.cross_entropy(m(x[step % 8 * 8:][:8]), y[step % 8 * 8:][:8]).backward(); o.step()
    for p, q in zip(nets[0].parameters(), nets[1].parameters()): assert torch.allclose(p, q, atol=1e-12, rtol=0)

def test_optimizer_state_dict_roundtrip_and_closure():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    o = AdamW([p], lr=0.1)
    def closure():
        o.zero_grad(); l = (p ** 2).sum(); l.backward(); return l
    for _ in range(3): o.step(closure)
    sd = __import__('copy').deepcopy(o.state_dict())  # state_dict() shares tensors with the live optimizer
    p2 = torch.nn.Parameter(p.detach().clone()); o2 = AdamW([p2], lr=0.1); o2.load_state_dict(sd)
    for _ in range(3): o.step(closure)
    def closure2():
        o2.zero_grad(); l = (p2 ** 2).sum(); l.backward(); return l
    for _ in range(3): o2.step(closure2)
    assert torch.equal(p, p2)

def test_params_without_grad_are_untouched():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    for O in (SGD, Adam, AdamW):
        o = O([a, b], lr=0.1, weight_decay=0.1) if O is not SGD else O([a, b], lr=0.1, momentum=0.9, weight_decay=0.1)
        (a.sum()).backward(); o.step(); o.zero_grad()
        assert torch.equal(b, torch.ones(2))

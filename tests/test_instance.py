"""ftlab.instance: exact restore, the sequential (Hardt & Sun) schedule, interior rate choice, order independence, retrieval against brute force, kNN against scikit-learn, the loop against fit, TTT-MLM's reach."""
import numpy as np
import pytest
import torch

from ftlab.engine import Collator, Optimization, fit
from ftlab.engine import columns
from ftlab.instance import (NeighbourIndex, adapt_predict, knn_predict, masked_views, mlm_ttt, nearest_neighbour_ttt, neighbour_support,
                            normalise, restore, scope_names, snapshot, tune_lr, union_finetune, union_of_neighbours)
from ftlab.mlm import mlm_loss, tied_mlm_head
from ftlab.testing import tiny_bert, toy_dataset


class Tok:   # the tokenizer fields MaskingCollator and Collator read, for the tiny BERT's 64-token vocabulary
    mask_token_id, pad_token_id, all_special_ids = 4, 0, [0, 1, 2, 3, 4]
    def __len__(self): return 64
    def get_vocab(self): return {}


def counts(ds, v=64): return torch.stack([torch.bincount(torch.tensor(x), minlength=v).float() + 1e-3 for x in ds["input_ids"]])
def state(m): return {k: v.clone() for k, v in m.state_dict().items()}
def same(a, b): return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
def query(ds, i): return {k: v for k, v in Collator()([ds[i]]).items() if k != "labels"}


@pytest.fixture(scope="module")
def trained():
    pool, queries = toy_dataset(96, seed=3), toy_dataset(10, seed=4)
    m = tiny_bert(seed=1, dropout=0.0)
    fit(m, pool, max_steps=6, batch_size=16, lr=3e-3, progress=False, plot=False, precision="fp32")
    _, nb = NeighbourIndex(counts(pool)).search(counts(queries), 8)
    return m.eval(), pool, queries, nb


@pytest.mark.parametrize("scope", ["all", "head", "bias_head", "top", "encoder"])
def test_restore_is_exact_bit_for_bit(trained, scope):
    m, pool, queries, nb = trained
    base = state(m); flags = [p.requires_grad for p in m.parameters()]
    sup = Collator()([pool[i] for i in nb[0].tolist()])
    r = adapt_predict(m, sup, query(queries, 0), scope_names(m, scope), steps=3, lr=1e-2, precision="fp32")
    assert same(base, state(m)), scope
    assert [p.requires_grad for p in m.parameters()] == flags and all(p.grad is None for p in m.parameters())
    assert r["losses"][-1] < r["losses"][0]        # it did train


def test_restore_survives_an_error(trained):
    m, pool, queries, nb = trained
    base = state(m)
    def boom(model, batch, st):
        loss = model(**batch).loss
        if getattr(boom, "called", False): raise RuntimeError("boom")
        boom.called = True; return loss
    with pytest.raises(RuntimeError, match="boom"):
        adapt_predict(m, Collator()([pool[i] for i in range(8)]), query(queries, 0), scope_names(m, "all"), steps=3, lr=1e-2,
                      loss_fn=boom, precision="fp32")
    assert same(base, state(m))


def test_prediction_does_not_depend_on_previous_inputs(trained):
    m, pool, queries, nb = trained
    fwd = nearest_neighbour_ttt(m, pool, queries, nb, k=8, steps=2, lr=1e-2, precision="fp32")
    order = [3, 7, 0, 9, 1, 5, 2, 8, 6, 4]
    shuffled = nearest_neighbour_ttt(m, pool, queries.select(order), nb[order], k=8, steps=2, lr=1e-2, precision="fp32")
    alone = nearest_neighbour_ttt(tiny_bert(seed=1, dropout=0.0).eval().requires_grad_(True), pool, queries, nb, k=8, steps=0)
    for j, i in enumerate(order): assert fwd.logits[i] == shuffled.logits[j]
    with torch.no_grad():      # zero steps: the base model's own prediction
        assert torch.equal(torch.tensor(nearest_neighbour_ttt(m, pool, queries, nb, k=8, steps=0, precision="fp32").logits[0]),
                           m(**query(queries, 0)).logits[0])
    assert not all(a == b for a, b in zip(fwd.logits, alone.logits))


def test_union_finetune_leaves_no_trace_and_uses_the_union(trained):
    m, pool, queries, nb = trained
    base = state(m)
    u = union_finetune(m, pool, queries, nb, k=4, lr=1e-2, epochs=1, batch_size=8, precision="fp32")
    assert same(base, state(m)) and not m.training
    assert u["n_train"] == len(set(nb[:, :4].flatten().tolist())) == len(union_of_neighbours(nb, 4))
    with torch.no_grad(): plain = m(**Collator()([{k: v for k, v in queries[i].items() if k != "labels"} for i in range(1)])).logits
    assert not torch.allclose(u["logits"][:1], plain)        # the union model differs from the base


def test_loop_matches_fit():
    toy = toy_dataset(8, seed=1); q = query(toy_dataset(4, seed=9), 0)
    ref = tiny_bert(seed=0, dropout=0.0)
    fit(ref, toy, max_steps=3, batch_size=8, lr=1e-2, optimization=Optimization(scheduler="constant"), progress=False, plot=False, precision="fp32")
    ours = tiny_bert(seed=0, dropout=0.0).eval()
    got = adapt_predict(ours, Collator()([toy[i] for i in range(8)]), q, scope_names(ours, "all"), steps=3, lr=1e-2, precision="fp32")
    with torch.no_grad(): want = ref.eval()(**q).logits
    torch.testing.assert_close(got["logits"], want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_retrieval_is_brute_force(k):
    g = torch.Generator().manual_seed(k)
    pool, qs = torch.randn(200, 12, generator=g) * 3, torch.randn(30, 12, generator=g)
    d, i = NeighbourIndex(pool).search(qs, k, batch_size=7)
    p, q = pool.double(), qs.double()
    ref = 1 - (q / q.norm(dim=1, keepdim=True)) @ (p / p.norm(dim=1, keepdim=True)).T
    rd, ri = ref.sort(dim=1)
    assert torch.equal(i, ri[:, :k])
    torch.testing.assert_close(d.double(), rd[:, :k], atol=1e-5, rtol=0)


def test_retrieval_errors():
    idx = NeighbourIndex(torch.randn(5, 3))
    with pytest.raises(ValueError, match="between 1 and the pool size 5"): idx.search(torch.randn(2, 3), 6)
    with pytest.raises(ValueError, match="4 dims, the pool 3"): idx.search(torch.randn(2, 4), 2)
    with pytest.raises(ValueError, match="all zeros"): normalise(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="labels"): NeighbourIndex(torch.randn(5, 3), labels=[0, 1])
    with pytest.raises(ValueError, match="no labels"): knn_predict(idx, torch.randn(1, 3), 2)


@pytest.mark.parametrize("k", [1, 3, 4, 7])
def test_knn_matches_sklearn(k):
    from sklearn.neighbors import KNeighborsClassifier
    rng = np.random.default_rng(k)
    centres = rng.normal(size=(3, 8)) * 2
    y = rng.integers(0, 3, 150); x = centres[y] + rng.normal(size=(150, 8))
    yq = rng.integers(0, 3, 60); xq = centres[yq] + rng.normal(size=(60, 8))
    sk = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(x, y)
    ours = knn_predict(NeighbourIndex(x, labels=y), xq, k, num_classes=3)
    np.testing.assert_array_equal(ours.argmax(-1), sk.predict(xq))          # ties (even k) go to the lower class in both
    np.testing.assert_allclose(ours, sk.predict_proba(xq), atol=1e-12)


def test_mlm_step_changes_only_the_encoder():
    m = tiny_bert(seed=2, dropout=0.0).eval(); head = tied_mlm_head(m, seed=0)
    before, before_head = state(m), state(head)
    b = masked_views(toy_dataset(4, seed=5)[0], Tok(), views=4, seed=0)
    assert (b["labels"] != -100).any() and b["input_ids"].shape[0] == 4
    names = set(scope_names(m, "encoder")); ps = dict(m.named_parameters())
    for n, p in ps.items(): p.requires_grad_(n in names)
    opt = torch.optim.SGD([ps[n] for n in names], lr=1.0)
    for p in head.parameters(): p.requires_grad_(p is m.get_input_embeddings().weight)
    mlm_loss(m, head, b).backward(); opt.step()
    moved = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= names
    assert not moved & set(scope_names(m, "head"))
    assert all(torch.equal(v, head.state_dict()[k]) for k, v in before_head.items() if "decoder" not in k)


def test_mlm_ttt_restores_and_is_order_free():
    m = tiny_bert(seed=2, dropout=0.0).eval(); head = tied_mlm_head(m, seed=0)
    before, before_head = state(m), state(head)
    qs = toy_dataset(5, seed=6)
    a = mlm_ttt(m, head, qs, Tok(), views=4, steps=2, lr=1e-2, precision="fp32")
    assert same(before, state(m)) and same(before_head, state(head))
    assert all(p.requires_grad for p in head.parameters())
    b = mlm_ttt(m, head, qs.select([4, 3, 2, 1, 0]), Tok(), views=4, steps=2, lr=1e-2, precision="fp32")
    assert a.logits.tolist() == b.logits.tolist()[::-1]     # masks are seeded by the input itself: order does not matter
    assert same(before, state(m))
    with torch.no_grad(): plain = m(**query(qs, 0)).logits[0].tolist()
    assert a.logits[0] != plain


def test_snapshot_errors_and_scope_errors():
    m = tiny_bert(seed=0)
    with pytest.raises(ValueError, match="has no parameters"): snapshot(m, ["nope.weight"])
    with pytest.raises(ValueError, match="scope must be one of"): scope_names(m, "everything")
    s = snapshot(m, scope_names(m, "head"))
    with torch.no_grad():
        for p in m.parameters(): p.add_(1.0)
    restore(m, s)
    ps = dict(m.named_parameters())
    assert all(torch.equal(ps[n], v) for n, v in s.items())


def test_gradients_left_by_the_caller_do_not_leak(trained):
    m, pool, queries, nb = trained
    sup, q = Collator()([pool[i] for i in nb[1].tolist()]), query(queries, 1)
    clean = adapt_predict(m, sup, q, scope_names(m, "all"), steps=2, lr=1e-2, precision="fp32")["logits"]
    stale = {n: torch.randn_like(p) for n, p in m.named_parameters()}
    for n, p in m.named_parameters(): p.grad = stale[n].clone()
    got = adapt_predict(m, sup, q, scope_names(m, "all"), steps=2, lr=1e-2, precision="fp32")["logits"]
    assert torch.equal(clean, got)
    assert all(torch.equal(p.grad, stale[n]) for n, p in m.named_parameters())     # and they are put back
    for p in m.parameters(): p.grad = None


def test_sequential_schedule_is_one_step_per_neighbour_nearest_first(trained):
    m, pool, queries, nb = trained
    base, cols, coll = state(m), columns(pool), Collator()
    rows = nb[0, :5].tolist()
    seq = neighbour_support(cols, rows, coll, "sequential")
    assert [b["input_ids"].shape[0] for b in seq] == [1] * 5
    assert all(torch.equal(b["input_ids"], coll([pool[r]])["input_ids"]) for b, r in zip(seq, rows))   # nearest first
    names, q = scope_names(m, "all"), query(queries, 0)
    r = adapt_predict(m, seq, q, names, steps=1, lr=3e-3, precision="fp32")
    assert len(r["losses"]) == 5 and same(base, state(m))
    with torch.no_grad(): assert abs(r["losses"][0] - m(**seq[0]).loss.item()) < 1e-6     # first step: the nearest, at the base weights
    assert len(adapt_predict(m, seq, q, names, steps=2, lr=3e-3, precision="fp32")["losses"]) == 10   # steps = passes over the list
    rev = adapt_predict(m, seq[::-1], q, names, steps=1, lr=3e-3, precision="fp32")
    assert not torch.equal(r["logits"], rev["logits"])                                  # the order is part of the method
    one_b = adapt_predict(m, neighbour_support(cols, rows[:1], coll, "batch"), q, names, steps=1, lr=3e-3, precision="fp32")
    one_s = adapt_predict(m, neighbour_support(cols, rows[:1], coll, "sequential"), q, names, steps=1, lr=3e-3, precision="fp32")
    assert torch.equal(one_b["logits"], one_s["logits"])                                # k = 1: the same update
    batch = nearest_neighbour_ttt(m, pool, queries, nb, k=5, steps=1, lr=3e-3, precision="fp32")
    runs = nearest_neighbour_ttt(m, pool, queries, nb, k=5, steps=1, lr=3e-3, precision="fp32", schedule="sequential")
    assert runs.logits[0] == r["logits"][0].tolist() and runs.logits.tolist() != batch.logits.tolist()
    assert same(base, state(m))
    with pytest.raises(ValueError, match="schedule must be one of"): nearest_neighbour_ttt(m, pool, queries, nb, schedule="random")


def test_adapt_predict_returns_the_adapted_cls_state(trained):
    m, pool, queries, nb = trained
    q, names = query(queries, 0), scope_names(m, "encoder")
    sup = Collator()([pool[i] for i in nb[0].tolist()])
    still = adapt_predict(m, sup, q, names, steps=0, precision="fp32", return_cls=True)
    with torch.no_grad(): want = m(**q, output_hidden_states=True).hidden_states[-1][:, 0]
    torch.testing.assert_close(still["cls"], want)
    moved = adapt_predict(m, sup, q, names, steps=2, lr=1e-2, precision="fp32", return_cls=True)
    assert not torch.equal(moved["cls"], still["cls"]) and "cls" not in adapt_predict(m, sup, q, names, steps=0, precision="fp32")


def test_tune_lr_widens_the_grid_until_the_choice_is_interior():
    seen = []
    def peaked(lr): seen.append(lr); return -abs(np.log10(lr) - np.log10(3e-2))
    lr, tab = tune_lr(peaked, [1e-4, 1e-3, 1e-2])
    assert lr == pytest.approx(1e-2) and tab.attrs["interior"] and np.allclose(tab.lr, [1e-4, 1e-3, 1e-2, 1e-1])
    assert len(seen) == len(set(seen)) == 4
    lr, tab = tune_lr(lambda lr: -abs(np.log10(lr) + 6), [1e-4, 1e-3, 1e-2], max_extend=5)     # widened downward, twice
    assert lr == pytest.approx(1e-6) and tab.attrs["interior"] and np.allclose(tab.lr.iloc[0], 1e-7)
    lr, tab = tune_lr(lambda lr: (0.5, -lr), [1e-3, 1e-2, 1e-1], max_extend=2)                # ties on accuracy: log-lik decides
    assert not tab.attrs["interior"] and len(tab) == 5 and lr == pytest.approx(1e-5)          # the cap stops it, and says so
    with pytest.raises(ValueError, match="at least 3 rates"): tune_lr(peaked, [1e-3, 1e-2])

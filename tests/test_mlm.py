"Masking statistics against transformers, masking edge cases, and the MLM head / loss / pretraining helpers of `ftlab.mlm`."
import math

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, DataCollatorForLanguageModeling

from ftlab.assets import model_path
from ftlab.engine import Collator, Stream, fit
from ftlab.losses import masked_lm_loss
from ftlab.mlm import (MaskingCollator, continuation_pieces, fill_mask, fixed_masks, heldout_mlm_loss, mask_tokens,
                       maskable_positions, mlm_loss, pseudo_perplexity, task_plus_mlm, tied_mlm_head, word_ids_from_pieces,
                       continue_pretraining, weight_drift)

SENTENCES = ["the flu vaccine is now available at your local pharmacy.", "i can't believe how long the line was",
             "unbelievable tokenization of antidisestablishmentarianism", "ok", "",
             "new study links sleep to heart health in adults over fifty", "lol", "what a game!!! #win"]


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(model_path("encoder"))


@pytest.fixture(scope="module")
def rows(tok):
    return [{"input_ids": tok(s)["input_ids"], "attention_mask": [1] * len(tok(s)["input_ids"])} for s in SENTENCES]


def counts(collate, rows, tok, n_batches):
    c = dict(maskable=0, picked=0, masked=0, kept=0, bad=0)
    for _ in range(n_batches):
        orig = Collator(tok)(rows); b = collate(rows)
        ok = maskable_positions(orig["input_ids"], orig["attention_mask"], tok.all_special_ids); p = b["labels"] != -100
        c["maskable"] += int(ok.sum()); c["picked"] += int(p.sum()); c["bad"] += int((p & ~ok).sum())
        c["masked"] += int((p & (b["input_ids"] == tok.mask_token_id)).sum())
        c["kept"] += int((p & (b["input_ids"] == orig["input_ids"])).sum())
    c["random"] = c["picked"] - c["masked"] - c["kept"]
    return c


def test_rates_match_transformers(tok, rows):
    "Picked / [MASK] / random / kept rates agree with DataCollatorForLanguageModeling within 4 standard errors."
    ours = counts(MaskingCollator(tok, seed=0, min_masked=0), rows, tok, 400)
    ref = counts(DataCollatorForLanguageModeling(tok, seed=1), rows, tok, 400)
    for num, den, r in [("picked", "maskable", 0.15), ("masked", "picked", 0.8), ("random", "picked", 0.1), ("kept", "picked", 0.1)]:
        tol = 4 * math.sqrt(2 * r * (1 - r) / min(ours[den], ref[den]))
        assert abs(ours[num] / ours[den] - ref[num] / ref[den]) < tol, (num, ours, ref)
        assert abs(ours[num] / ours[den] - r) < tol, (num, ours)
    assert ours["bad"] == 0 and ref["bad"] == 0


@pytest.mark.parametrize("whole_word", [False, True])
def test_never_picks_special_or_padding(tok, rows, whole_word):
    c = MaskingCollator(tok, mlm_probability=0.9, whole_word=whole_word, seed=3)
    for _ in range(50):
        orig = Collator(tok)(rows); b = c(rows)
        ok = maskable_positions(orig["input_ids"], orig["attention_mask"], tok.all_special_ids)
        picked = b["labels"] != -100
        assert not (picked & ~ok).any()
        assert (b["input_ids"][orig["attention_mask"] == 0] == tok.pad_token_id).all()     # padding untouched
        assert (b["labels"][picked] == orig["input_ids"][picked]).all()


def test_no_maskable_token(tok):
    "A row of only [CLS] [SEP] gets no labels; a batch of only such rows comes back with every label -100, no error."
    c = MaskingCollator(tok, seed=0)
    b = c([{"input_ids": tok("")["input_ids"]}] * 4)
    assert (b["labels"] == -100).all() and (b["input_ids"] == torch.tensor(tok("")["input_ids"])).all()
    mixed = c([{"input_ids": tok("")["input_ids"]}, {"input_ids": tok("hello there friend")["input_ids"]}])
    assert (mixed["labels"][0] == -100).all() and (mixed["labels"][1] != -100).sum() >= 1    # min_masked=1 lands in row 1


def test_min_masked(tok):
    ids = torch.tensor([tok("a b c d e f")["input_ids"]]); ok = maskable_positions(ids, torch.ones_like(ids), tok.all_special_ids)
    _, lab = mask_tokens(ids, ok, tok.mask_token_id, len(tok), mlm_probability=0.0, min_masked=2)
    assert (lab != -100).sum() == 2
    _, lab0 = mask_tokens(ids, ok, tok.mask_token_id, len(tok), mlm_probability=0.0, min_masked=0)
    assert (lab0 == -100).all()


def test_reproducible_with_seed(tok, rows):
    a, b, c = MaskingCollator(tok, seed=5)(rows), MaskingCollator(tok, seed=5)(rows), MaskingCollator(tok, seed=6)(rows)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["labels"], c["labels"])
    g = MaskingCollator(tok)                                   # no seed: the global RNG, as inside `fit`
    torch.manual_seed(11); x = g(rows); torch.manual_seed(11); y = g(rows)
    assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])


def test_whole_words_stay_whole(tok, rows):
    c = MaskingCollator(tok, whole_word=True, mlm_probability=0.4, seed=0)
    cont = continuation_pieces(tok)
    assert cont[tok.convert_tokens_to_ids("##ing")] and not cont[tok.convert_tokens_to_ids("the")]
    split_seen = False
    for _ in range(100):
        orig = Collator(tok)(rows); b = c(rows)
        ok = maskable_positions(orig["input_ids"], orig["attention_mask"], tok.all_special_ids)
        wid = word_ids_from_pieces(orig["input_ids"], cont, ok); p = b["labels"] != -100
        for r in range(len(p)):
            for w in wid[r][p[r]].unique():
                assert p[r][wid[r] == w].all()
                split_seen |= int((wid[r] == w).sum()) > 1
    assert split_seen, "no multi-piece word was ever picked: the test did not exercise whole-word masking"


def test_bad_arguments(tok):
    ids = torch.ones(2, 5, dtype=torch.long); ok = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="mlm_probability"): mask_tokens(ids, ok, 103, 100, mlm_probability=1.5)
    with pytest.raises(ValueError, match="mask_frac \\+ random_frac"): mask_tokens(ids, ok, 103, 100, mask_frac=0.9, random_frac=0.2)
    with pytest.raises(ValueError, match="shape"): mask_tokens(ids, ok[:, :3], 103, 100)


# ---------------------------------------------------------------- head, loss, pretraining (a tiny random BERT)
@pytest.fixture()
def tiny(tok):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=64, num_labels=2)
    m = BertForSequenceClassification(cfg)
    return m, tied_mlm_head(m)


def test_head_is_tied_and_loss_decodes_only_picked(tiny, tok, rows):
    m, head = tiny
    assert head.predictions.decoder.weight is m.get_input_embeddings().weight
    b = MaskingCollator(tok, seed=0)(rows)
    m.eval(); head.eval()
    h = m(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(mlm_loss(m, head, b), masked_lm_loss(head(h), b["labels"]), rtol=1e-5, atol=1e-5)


def test_pseudo_perplexity_by_hand(tiny, tok):
    m, head = tiny; m.eval(); head.eval()
    ids = tok("health news today")["input_ids"]
    nll = []
    with torch.no_grad():
        for t in range(1, len(ids) - 1):
            x = torch.tensor([ids]); x[0, t] = tok.mask_token_id
            h = m(input_ids=x, attention_mask=torch.ones_like(x), output_hidden_states=True).hidden_states[-1][0, t]
            nll.append(-torch.log_softmax(head(h), -1)[ids[t]].item())
    got = pseudo_perplexity(m, head, [{"input_ids": ids}], tok, max_rows=1)
    assert math.isclose(got, math.exp(sum(nll) / len(nll)), rel_tol=1e-5)


def test_fill_mask(tiny, tok):
    m, head = tiny
    out = fill_mask(m, head, tok, "the [MASK] is [MASK] .", k=4)
    assert len(out) == 2 and all(len(o) == 4 for o in out)
    assert all(a[1] >= b[1] for o in out for a, b in zip(o, o[1:]))
    m.train(); head.train()
    with pytest.raises(ValueError, match="MASK"): fill_mask(m, head, tok, "no blank here")
    assert m.training and head.training                                               # modes given back, even on the error


def test_continue_pretraining_head_only_and_full(tiny, tok, rows):
    from datasets import Dataset
    m, head = tiny
    corpus = Dataset.from_list(rows * 4)
    enc0 = {k: v.clone() for k, v in m.state_dict().items()}; tr0 = head.predictions.transform.dense.weight.detach().clone()
    continue_pretraining(m, head, corpus, tok, train_encoder=False, steps=2, batch_size=8, lr=1e-2)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in enc0.items())            # encoder (and tied decoder) untouched
    assert not torch.equal(tr0, head.predictions.transform.dense.weight)              # the head learned
    assert all(p.requires_grad for p in m.parameters())                               # flags restored
    r1 = continue_pretraining(m, head, corpus, tok, steps=2, batch_size=8, lr=1e-3, seed=4, log_every=1)
    assert not torch.equal(enc0["bert.encoder.layer.0.output.dense.weight"], m.state_dict()["bert.encoder.layer.0.output.dense.weight"])
    assert head.predictions.decoder.weight is m.get_input_embeddings().weight         # still tied after training
    assert len(r1.history) >= 2 and r1.history.loss.notna().all()


def test_heldout_loss_is_deterministic(tiny, tok, rows):
    from datasets import Dataset
    m, head = tiny
    ds = Dataset.from_list(rows)
    a, b = fixed_masks(ds, tok, batch_size=3, seed=1), fixed_masks(ds, tok, batch_size=3, seed=1)
    assert heldout_mlm_loss(m, head, a) == heldout_mlm_loss(m, head, b)
    assert m.training                                                                 # mode restored


def test_task_plus_mlm(tiny, tok, rows):
    from datasets import Dataset
    m, head = tiny
    task = Dataset.from_list([dict(r, labels=i % 2) for i, r in enumerate(rows)])
    general = Dataset.from_list(rows)
    r0 = fit(m, task, loss_fn=task_plus_mlm(0.0), frozen={"mlm_head": head}, max_steps=1, batch_size=4, progress=False, plot=False,
             tokenizer=tok, log_every=1)
    assert "mlm_loss" not in r0.history or r0.history.mlm_loss.isna().all()
    r1 = fit(m, task, loss_fn=task_plus_mlm(0.5), frozen={"mlm_head": head}, max_steps=1, batch_size=4, progress=False, plot=False,
             tokenizer=tok, log_every=1, streams={"general": Stream(general, 4, MaskingCollator(tok))})
    h = r1.history.dropna(subset=["mlm_loss"]).iloc[0]
    assert math.isclose(h.loss, h.task_loss + 0.5 * h.mlm_loss, rel_tol=1e-4)
    with pytest.raises(ValueError, match="no stream"):
        fit(m, task, loss_fn=task_plus_mlm(0.5), frozen={"mlm_head": head}, max_steps=1, batch_size=4, progress=False, plot=False,
            tokenizer=tok)


def test_weight_drift(tiny, tok, rows):
    from datasets import Dataset
    m, head = tiny
    before = {k: v.clone() for k, v in m.state_dict().items()}
    d0 = weight_drift(m.state_dict(), before, prefix="bert.")
    assert d0["distance"] == 0.0 and d0["relative"] == 0.0 and d0["tensors"] > 0
    continue_pretraining(m, head, Dataset.from_list(rows), tok, steps=2, batch_size=4, lr=1e-3)
    small = {k: v.clone() for k, v in m.state_dict().items()}
    d1 = weight_drift(small, before, prefix="bert.")
    assert d1["distance"] > 0 and 0 < d1["relative"] < 1
    assert weight_drift(small, before)["tensors"] > d1["tensors"]                      # the classifier too, without a prefix
    with pytest.raises(ValueError, match="no floating-point"): weight_drift(small, before, prefix="nothing.")

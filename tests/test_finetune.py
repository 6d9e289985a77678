"""ftlab.finetune: freezing, parameter groups, gradual unfreezing, CRF head, and save/reload of plain and LoRA models."""
import copy

import pytest
import torch

from ftlab.testing import tiny_bert, toy_dataset
from ftlab.finetune import (STRATEGIES, TokenClassifierCRF, add_lora, block_of, blocks, crf_predict, discriminative_lr_groups,
                            get_strategy, head_blocks, load_finetuned, n_trainable, text_logits, save_finetuned,
                            set_trainable, trainable_summary, weak_token_dataset)

KW = dict(batch_size=32, progress=False, plot=False)


@pytest.fixture(scope="module")
def toy():
    return toy_dataset(128), toy_dataset(64, seed=1)


def test_set_trainable_counts_match_summary():
    m = set_trainable(tiny_bert(), ["layer.1"] + head_blocks(tiny_bert()))
    s = trainable_summary(m).set_index("block")
    assert s.loc["layer.0", "trainable"] == 0 and s.loc["layer.1", "trainable"] == s.loc["layer.1", "params"]
    assert n_trainable(m)[0] == sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_discriminative_groups_cover_each_trainable_parameter_once():
    m = set_trainable(tiny_bert(), ["layer.0", "layer.1", "pooler", "classifier"])
    groups = discriminative_lr_groups(m, lr=1e-3, decay=0.5)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(1 for p in m.parameters() if p.requires_grad)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    lrs = {block_of(n): lr_of[id(p)] for n, p in m.named_parameters() if p.requires_grad}
    assert lrs["layer.0"] == pytest.approx(lrs["layer.1"] / 2) and "embeddings" not in lrs
    assert all(g["weight_decay"] == 0.0 for g in groups if any(p.ndim < 2 for p in g["params"]))   # the engine's no-decay rule


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_trains_and_leaves_frozen_blocks_alone(name, toy):
    m = tiny_bert(); before = copy.deepcopy(m.state_dict())
    r = get_strategy(name)(m, toy[0], toy[1], max_steps=3, lr=1e-2, **KW, **({"head_epochs": 1} if name in ("head", "two_stage") else {"k": 1} if name == "last_k" else {}))
    assert r.steps >= 1 and 0 <= r.metrics["accuracy"] <= 1
    if name not in ("head", "last_k"): return
    sd = r.model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], sd[k])}
    if name == "head": assert all(k.startswith(("bert.pooler", "classifier")) for k in moved) and moved
    if name == "last_k": assert not any(k.startswith(("bert.embeddings", "bert.encoder.layer.0.")) for k in moved)


def test_crf_token_head_trains_and_decodes():
    from ftlab.assets import load_encoder
    from ftlab.engine import evaluate, fit
    m, tok = load_encoder("encoder", task="token", num_labels=3)
    texts = ["a wonderful film", "a boring, awful plot", "great acting but a dull script"] * 8
    ds = weak_token_dataset(texts, tok, 32)
    crf = TokenClassifierCRF(m)
    r = fit(crf, ds, None, task="token", max_steps=6, lr=1e-3, tokenizer=tok, **KW)
    ev = evaluate(r.model, ds, task="token", tokenizer=tok, predict_fn=crf_predict)
    n_words = sum(l != -100 for ls in ds["labels"] for l in ls)
    assert 0 <= ev["accuracy"] <= 1 and n_words == 8 * (3 + 5 + 6)   # punctuation is a word: 'a boring , awful plot'


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_save_and_reload_identical_predictions(kind, tmp_path):
    from ftlab.assets import load_encoder, load_sentiment
    from ftlab.engine import seed_everything, tokenize
    seed_everything(0)
    m, tok = load_encoder("encoder", num_labels=2)
    data = load_sentiment("movie")
    small = tokenize(data["train"].select(range(64)), tok, 32)
    r = get_strategy(kind)(m, small, max_steps=2, lr=3e-3, tokenizer=tok, **KW)
    texts = list(data["test"]["text"][:12])
    before = text_logits(r.model, tok, texts)
    save_finetuned(r.model, tok, tmp_path / kind, strategy=kind, base_model="encoder")
    m2, tok2, cfg = load_finetuned(tmp_path / kind)
    torch.testing.assert_close(text_logits(m2, tok2, texts), before, rtol=0, atol=1e-6)
    assert cfg["adapter"] == (kind == "lora")
    if kind == "lora":   # the head came back with the adapter: not the base model's fresh head
        seed_everything(1); fresh, _ = load_encoder("encoder", num_labels=2)
        assert (text_logits(fresh, tok, texts) - before).abs().max() > 1e-3


def test_add_lora_rejects_bad_targets_and_rank():
    with pytest.raises(ValueError, match="no module named"): add_lora(tiny_bert(), target_modules=["q_proj"])
    with pytest.raises(ValueError, match="rank r must be a positive integer"): add_lora(tiny_bert(), r=0)
    pm = add_lora(tiny_bert(), r=2, target_modules=["query", "value"])
    s = trainable_summary(pm).set_index("block")
    assert s.loc["layer.0", "trainable"] == 2 * 2 * (32 + 32) and s.loc["embeddings", "trainable"] == 0

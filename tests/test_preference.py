"ftlab.preference: Bradley–Terry, DPO and GRPO pieces against hand-computed values and against trl on a tiny model."
import copy, math
import numpy as np, pandas as pd
import pytest
import torch
import torch.nn.functional as F

from ftlab import preference as pf
from ftlab import rl


@pytest.fixture(scope="module")
def tiny(tiny_lm):
    "A random 2-layer Llama with SmolLM2's tokenizer (`tiny_lm` in conftest.py, from `ftlab.testing.tiny_llama`)."
    return tiny_lm


PAIRS = pd.DataFrame(dict(prompt=["This movie was", "The plot", "I watched it", "The actors"],
                          chosen=[" great fun", " is clever and warm", " twice, happily", " shine"],
                          rejected=[" dull", " falls apart", " and regretted it", " are wooden and flat"]))


def test_bradley_terry_and_accuracy():
    rc, rr = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    torch.testing.assert_close(pf.bradley_terry_loss(rc, rr), F.softplus(rr - rc).mean())
    assert pf.bradley_terry_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(math.log(2))
    assert pf.pairwise_accuracy(torch.tensor([1., 0., 2.]), torch.tensor([0., 1., 2.])) == 0.5
    with pytest.raises(ValueError, match="shape"): pf.bradley_terry_loss(torch.zeros(2), torch.zeros(3))


def test_dpo_loss_by_hand():
    l, st = pf.dpo_loss(torch.tensor([-1.0, -3.0], dtype=torch.float64), torch.tensor([-1.5, -2.5], dtype=torch.float64), beta=0.1)
    assert l.item() == pytest.approx(math.log1p(math.exp(-0.1)), abs=1e-12)
    assert st["margin"].item() == pytest.approx(0.1, abs=1e-12)


def test_pair_batch_layout_and_ln2_at_init(tiny):
    model, tok = tiny
    ds = pf.pair_dataset(PAIRS, tok)
    b = pf.PairCollator(tok.pad_token_id)([ds[i] for i in range(4)])
    assert b["input_ids"].shape[0] == 8 and b["completion_mask"].shape == b["input_ids"].shape
    assert (b["completion_mask"] <= b["attention_mask"]).all()
    last = b["attention_mask"].sum(1) - 1   # every sequence ends with EOS, inside its completion
    assert (b["input_ids"][torch.arange(8), last] == tok.eos_token_id).all() and (b["completion_mask"][torch.arange(8), last] == 1).all()
    pol = rl.lora_policy(copy.deepcopy(model), r=4, alpha=8)
    with torch.no_grad(): loss, st = pf.dpo_loss(pf.completion_logps(pol, b), pf.completion_logps(model, b), 0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6) and st["margin"].abs().item() < 1e-6


EDGE_PAIRS = pd.DataFrame(dict(prompt=["This movie was", "I liked it ", "The plot", "This movie was"],
                               chosen=["n't good", "a lot", " is clever", " fine</s>"],   # "</s>": replaced by the EOS below
                               rejected=[" great", " not at all", "s are thin", "n't"]))


def test_pair_dataset_matches_trl_tokenization(tiny, tmp_path):
    """Our `pair_dataset` + `PairCollator` against trl 1.16's own tokenization: `DPOTrainer._prepare_dataset` (called
    on a stand-in `self` with the tokenizer, and a real `DPOConfig`) and `DataCollatorForPreference`. The edge pairs
    split prompt from completion at different tokens ("was" + "n't" merges into "wasn"; a prompt ending in a space),
    where one prompt length per pair (trl) and one per completion (the old rule) differ."""
    import types
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference
    _, tok = tiny
    df = pd.concat([PAIRS, EDGE_PAIRS.assign(chosen=EDGE_PAIRS.chosen.str.replace("</s>", tok.eos_token))], ignore_index=True)
    args = DPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, bf16=False, dataset_num_proc=None)
    theirs = DPOTrainer._prepare_dataset(types.SimpleNamespace(_tokenizer=tok), Dataset.from_pandas(df), tok, args, "train")
    tb = DataCollatorForPreference(pad_token_id=tok.pad_token_id)([theirs[i] for i in range(len(df))])
    ours_ds = pf.pair_dataset(df, tok)
    ob = pf.PairCollator(tok.pad_token_id)([ours_ds[i] for i in range(len(df))])
    for k in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(ob[k], tb[k]), (k, ob[k], tb[k])
    e = len(PAIRS)   # "This movie was" / "n't good" / " great": the rejected row's completion starts at " was", as in trl
    assert ours_ds[e]["r_cmask"] == [0, 0, 1, 1, 1] and ours_ds[e]["c_cmask"].index(1) == 2
    assert ours_ds[e + 3]["c_ids"][-2:] != [tok.eos_token_id] * 2   # a completion that ends with EOS gets no second one


def test_dpo_loss_equals_trl(tiny, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    model, tok = tiny
    pol = rl.lora_policy(copy.deepcopy(model), r=4, alpha=8)
    cfg = DPOConfig(output_dir=str(tmp_path), beta=0.1, bf16=False, use_cpu=True, report_to=[], per_device_train_batch_size=4,
                    max_steps=1, activation_checkpointing=False)
    tr = DPOTrainer(model=pol, ref_model=copy.deepcopy(model), args=cfg, processing_class=tok, train_dataset=Dataset.from_pandas(PAIRS))
    batch = tr.data_collator([tr.train_dataset[i] for i in range(4)])
    ours = pf.PairCollator(tok.pad_token_id)([pf.pair_dataset(PAIRS, tok)[i] for i in range(4)])
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for n, p in tr.model.named_parameters():
            if "lora_B" in n: p.add_(0.5 * torch.randn(p.shape, generator=g))
    tr.model.eval()
    with torch.no_grad():
        theirs = float(tr._compute_loss(tr.model, batch, return_outputs=False))
        mine = float(pf.dpo_loss(pf.completion_logps(tr.model, ours), pf.completion_logps(model, ours), 0.1)[0])
    assert abs(theirs - math.log(2)) > 1e-4          # the policy moved: not the trivial ln 2 case
    assert abs(mine - theirs) <= 1e-5


def test_group_advantages_by_hand():
    rw = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.2, 0.2, 0.2, 0.2])
    a, zero = pf.group_advantages(rw, 4)
    g = torch.tensor([1.0, 0.0, 0.5, 0.5])
    torch.testing.assert_close(a[:4], (g - 0.5) / (g.std() + 1e-4)); assert zero == 0.5 and (a[4:] == 0).all()
    torch.testing.assert_close(pf.group_advantages(rw, 4, scale=False)[0][:4], torch.tensor([0.5, -0.5, 0.0, 0.0]))
    with pytest.raises(ValueError, match="group"): pf.group_advantages(rw, 3)


def test_group_advantages_equal_trl(tiny, tmp_path):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer
    model, tok = tiny
    model.save_pretrained(tmp_path / "m"); tok.save_pretrained(tmp_path / "m")
    seen = dict(rewards=[], adv=[])
    def reward(completions, **kw):
        r = [float(len(c) % 5) for c in completions]; seen["rewards"].append(r); return r
    cfg = GRPOConfig(output_dir=str(tmp_path / "o"), num_generations=4, per_device_train_batch_size=8, generation_batch_size=8,
                     max_completion_length=6, max_steps=2, beta=0.0, bf16=False, use_cpu=True, report_to=[], activation_checkpointing=False)
    tr = GRPOTrainer(model=str(tmp_path / "m"), reward_funcs=reward, args=cfg, processing_class=tok,
                     train_dataset=Dataset.from_dict(dict(prompt=["This movie", "The plot", "I think", "It was"])),
                     peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    orig = tr._generate_and_score_completions   # its output, before trl shuffles it into mini-batches
    def spy(inputs):
        out = orig(inputs); seen["adv"].append(out["advantages"].detach().clone()); return out
    tr._generate_and_score_completions = spy
    tr.train()
    ours = torch.cat([pf.group_advantages(torch.tensor(r), 4)[0] for r in seen["rewards"]])
    torch.testing.assert_close(ours, torch.cat(seen["adv"]).view(-1), atol=1e-5, rtol=0)


def test_grpo_train_runs(tiny):
    model, tok = tiny
    pol = rl.lora_policy(copy.deepcopy(model), r=4, alpha=8)
    res = pf.grpo_train(pol, tok, ["This movie", "The plot"], rl.vader_reward, steps=2, prompts_per_step=2, group=2, max_new_tokens=4, progress=False)
    assert isinstance(res, rl.RLResult) and res.policy is pol and res.train_time_s > 0   # one result type with rl_train
    h = res.history
    assert len(h) == 2 and np.isfinite(h[["reward", "loss"]].values).all() and h.frac_reward_zero_std.between(0, 1).all()


def test_best_of_n_kl():
    assert pf.best_of_n_kl(1) == 0.0 and pf.best_of_n_kl(4) == pytest.approx(math.log(4) - 0.75)
    with pytest.raises(ValueError): pf.best_of_n_kl(0)


def _bon_kl_by_enumeration(values, n):
    "KL(best-of-n ‖ uniform over `values`), every value an atom: enumerate all n-tuples of indices (ties broken by the first maximum)."
    import itertools
    m = len(values); p_bon = np.zeros(m)
    for idx in itertools.product(range(m), repeat=n):
        r = [values[i] for i in idx]; p_bon[idx[int(np.argmax(r))]] += 1.0 / m**n
    keep = p_bon > 0
    return float((p_bon[keep] * np.log(p_bon[keep] * m)).sum())


def test_best_of_n_kl_sampled():
    rng = np.random.default_rng(0)
    # no ties: the formula, for any number of draws
    assert pf.best_of_n_kl_sampled(rng.normal(size=(3, 9)), 4) == pytest.approx([pf.best_of_n_kl(4)] * 3)
    # every reward tied at least twice: exactly the KL of best-of-n over the draws (each draw equally likely), by enumeration
    vals = [0.0, 0.0, 0.5, 0.5, 0.5, 1.0, 1.0]
    assert pf.best_of_n_kl_sampled(np.array([vals]), 3)[0] == pytest.approx(_bon_kl_by_enumeration(vals, 3), abs=1e-12)
    # ties lower it below the formula; all tied: zero
    assert pf.best_of_n_kl_sampled(np.array([vals]), 3)[0] < pf.best_of_n_kl(3)
    assert pf.best_of_n_kl_sampled(np.zeros((2, 5)), 4) == pytest.approx([0.0, 0.0])
    with pytest.raises(ValueError): pf.best_of_n_kl_sampled(np.zeros((2, 1)), 4)


def test_best_of_n_reward_is_the_mean_max_over_subsets():
    import itertools
    r = np.array([0.3, -0.2, 0.3, 0.9, 0.0, -0.5])
    want = np.mean([max(c) for c in itertools.combinations(r, 3)])
    assert pf.best_of_n_reward(r[None], 3)[0] == pytest.approx(want, abs=1e-12)
    assert pf.best_of_n_reward(r[None], 1)[0] == pytest.approx(r.mean()) and pf.best_of_n_reward(r[None], 6)[0] == pytest.approx(r.max())
    with pytest.raises(ValueError): pf.best_of_n_reward(r[None], 7)


def test_dpo_with_fit_starts_at_ln2_and_grows_the_margin(tiny):
    from ftlab.engine import Optimization, fit
    model, tok = tiny
    pol = rl.lora_policy(copy.deepcopy(model), r=4, alpha=8)
    res = fit(pol, pf.pair_dataset(PAIRS, tok), loss_fn=pf.dpo_loss_fn(0.1), frozen=dict(ref=model), collate_fn=pf.PairCollator(tok.pad_token_id),
              task="lm", max_steps=4, batch_size=4, lr=1e-2, optimization=Optimization(weight_decay=0.0), plot=False, progress=False, log_every=1, precision="no")
    h = res.history
    assert h.loss.iloc[0] == pytest.approx(math.log(2), abs=1e-5) and h.margin.iloc[0] == pytest.approx(0.0, abs=1e-6)
    assert h.margin.iloc[-1] > 0 and h.loss.iloc[-1] < math.log(2)   # the same 4 pairs every step: the margin must grow

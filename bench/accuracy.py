"""Does bf16 autocast, or length-grouped batching, change what fine-tuning reaches? Accuracy over seeds.

The fast profile's strategies of the full fine-tuning chapter (head, LoRA, full; its data sizes and learning rates)
on movie sentiment, three seeds, in three settings: fp32 with length-grouped batches, bf16 autocast with
length-grouped batches (`fit`'s defaults on a CPU with bf16 units), and bf16 with random batches. Each setting is
compared with fp32 + grouped over the same seeds (paired t-test, `ftlab.stats.paired_seeds`): the question is whether
the difference's 95% interval contains 0 and how wide it is.

    python -m bench.accuracy [--seeds 0 1 2] [--strategies head,lora,full]

Writes bench/results/accuracy_runs.csv (one row per run) and accuracy.csv (the comparison), prints both.
"""
from __future__ import annotations
import argparse, os, time, warnings
from pathlib import Path

from bench import common as C

SETTINGS = {  # name: (FTLAB_PRECISION, group_by_length)
    "fp32 grouped": ("fp32", True),
    "bf16 grouped": ("bf16", True),
    "bf16 random": ("bf16", False),
}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--strategies", default="head,lora,full")
    ap.add_argument("--out", default=str(C.RESULTS))
    a = ap.parse_args(argv)
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"): os.environ.setdefault(k, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false"); os.environ["FTLAB_PROFILE"] = "fast"
    warnings.filterwarnings("ignore")
    import pandas as pd
    from transformers import AutoTokenizer
    from ftlab import finetune as F
    from ftlab.assets import model_path
    from ftlab.stats import mean_ci, paired_seeds
    ps = F.profile_settings()
    strategies = [s for s in a.strategies.split(",") if s]
    tok = AutoTokenizer.from_pretrained(model_path("encoder"))
    tr, te, _ = F.tokenized_splits("sentiment/movie", tok, ps["max_length"], ps["n_train"], ps["n_test"], 0)
    print(f"machine: {C.machine()}; {len(tr)} train / {len(te)} test snippets, {ps['epochs']} epoch, max_length {ps['max_length']}", flush=True)
    rows, T0 = [], time.time()
    for seed in a.seeds:
        for setting, (prec, grouped) in SETTINGS.items():
            os.environ["FTLAB_PRECISION"] = prec
            for s in strategies:
                if s == "head" and not grouped: continue   # the head trains on cached features: no batches of text to group
                kw = dict(ps["overrides"].get(s, {}), group_by_length=grouped) if s != "head" else dict(ps["overrides"].get(s, {}))
                row, _ = F.run_strategy(s, tr, te, seed=seed, tokenizer=tok, epochs=ps["epochs"], batch_size=ps["batch_size"], **kw)
                rows.append(dict(strategy=s, setting=setting, precision=prec, group_by_length=grouped, seed=seed,
                                 accuracy=row["accuracy"], macro_f1=row["macro_f1"], steps=row["steps"], train_time_s=row["train_time_s"]))
                print(f"  seed {seed}  {setting:12s}  {s:5s}  acc {row['accuracy']:.4f}  {row['steps']} steps  {row['train_time_s']:.1f}s", flush=True)
    os.environ.pop("FTLAB_PRECISION", None)
    df = pd.DataFrame(rows)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "accuracy_runs.csv", index=False)
    comp = []
    for s in strategies:
        base = df[(df.strategy == s) & (df.setting == "fp32 grouped")].set_index("seed").accuracy
        for setting in SETTINGS:
            cur = df[(df.strategy == s) & (df.setting == setting)].set_index("seed").accuracy
            if cur.empty: continue
            ci = mean_ci(cur.values)
            r = dict(strategy=s, setting=setting, seeds=len(cur), accuracy=ci.estimate, ci_lo=ci.lo, ci_hi=ci.hi)
            if setting != "fp32 grouped":
                c = paired_seeds(cur, base)
                r.update(diff_vs_fp32_grouped=c.difference, diff_lo=c.lo, diff_hi=c.hi, p=c.p_value)
            comp.append(r)
    C.write_csv("accuracy", comp, out)
    print("\n" + C.table(comp, ["strategy", "setting", "seeds", "accuracy", "ci_lo", "ci_hi", "diff_vs_fp32_grouped", "diff_lo", "diff_hi", "p"],
                         f"test accuracy over seeds (mean, 95% t interval) and the paired difference to fp32 + grouped; "
                         f"{len(te)} test snippets"))
    print(f"total {time.time() - T0:.0f}s")


if __name__ == "__main__":
    main()

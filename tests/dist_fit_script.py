"""Run `fit` on a tiny model and write the final weights; started by tests/test_engine.py in 1 or 2 processes."""
import json, sys
import torch
from ftlab.engine import fit
from ftlab.testing import tiny_bert, toy_dataset

out = sys.argv[1]
res = fit(tiny_bert(dropout=0.0), toy_dataset(256), toy_dataset(64, seed=1), batch_size=16, grad_accum=2, max_steps=6,
          lr=3e-3, log_every=1, progress=False, plot=False, seed=0)
import torch.distributed as dist
rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
if rank == 0:
    torch.save({k: v.detach().cpu() for k, v in res.model.state_dict().items()}, out + ".pt")
    json.dump(dict(world=world, metrics=res.metrics, losses=res.history[res.history.split == "train"].loss.tolist()), open(out + ".json", "w"))

"""Run `fit` on a tiny model and write the final weights; started by the tests in 1 or 2 processes.

    python tests/dist_fit_script.py OUT [plain|streams]

`streams` adds the whole contract: two auxiliary streams (one cycled, with its own batch size), an extra trainable
module at its own learning rate, a frozen module, and logs returned by the loss.
"""
import json, sys
import torch
from ftlab.engine import Optimization, Stream, default_loss, fit
from ftlab.testing import tiny_bert, toy_dataset

out, mode = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "plain")
kw = dict(batch_size=16, optimization=Optimization(grad_accum=2), max_steps=6, lr=3e-3, log_every=1, progress=False, plot=False, seed=0)
if mode == "streams":
    torch.manual_seed(5); head = torch.nn.Linear(32, 1); ref = tiny_bert(dropout=0.0, seed=9)

    def loss_fn(model, batch, state):
        task = default_loss(model, batch)
        u, v = state.batches["unlabelled"], state.batches["short"]
        h = model(**u, output_hidden_states=True).hidden_states[-1][:, 0]
        aux = state.modules["head"](h).pow(2).mean()
        with torch.no_grad(): r = state.frozen["ref"](**{k: x for k, x in v.items() if k != "labels"}).logits.mean()
        return task + 0.1 * aux, dict(task_loss=task, aux=aux, ref_logit=r)
    kw.update(loss_fn=loss_fn, modules={"head": (head, 1e-2)}, frozen={"ref": ref},
              streams={"unlabelled": toy_dataset(200, seed=2).remove_columns("labels"),
                       "short": Stream(toy_dataset(24, seed=3), batch_size=8)})
res = fit(tiny_bert(dropout=0.0), toy_dataset(256), toy_dataset(64, seed=1), **kw)
import torch.distributed as dist
rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
if rank == 0:
    sd = {k: v.detach().cpu() for k, v in res.model.state_dict().items()}
    for name, m in res.modules.items(): sd.update({f"{name}.{k}": v.detach().cpu() for k, v in m.state_dict().items()})
    torch.save(sd, out + ".pt")
    tr = res.history[res.history.split == "train"]
    json.dump(dict(world=world, metrics=res.metrics, losses=tr.loss.tolist(),
                   logs={c: tr[c].tolist() for c in ("task_loss", "aux", "ref_logit") if c in tr}), open(out + ".json", "w"))

"""Re-run only the cells of a notebook that show recorded results — `show_recorded(...)`, `show_claims(CLAIMS)` — and
store their outputs in place, so a notebook shows the current recording and ledger without re-running its experiments.

    python scripts/refresh_recorded.py NOTEBOOK [NOTEBOOK ...]

The cells run in a fresh kernel after `from ftlab.stats import *` (and its rooms `ftlab.claims`, `ftlab.recording`) and the notebook's `CLAIMS = claims(...)` cell (which
holds literal values only), so what they print is what they would print in a full run. Run `nbdev-clean` afterwards.
"""
import re, sys, time
from pathlib import Path

SHOW = re.compile(r"^\s*((?:stats\.)?show_recorded\([^()]*\)|(?:stats\.)?show_claims\(CLAIMS[^()]*\))\s*;?\s*$")
CLAIMS = re.compile(r"^CLAIMS\s*=\s*claims\(", re.M)


def refresh(path: Path) -> int:
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    shows = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and SHOW.match(c.source)]
    if not shows: return 0
    decl = [c.source for c in nb.cells if c.cell_type == "code" and CLAIMS.search(c.source)]
    run = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("from ftlab import stats\nfrom ftlab.stats import *\nfrom ftlab.claims import *\nfrom ftlab.recording import *"), *map(nbformat.v4.new_code_cell, decl),
                                          *(nbformat.v4.new_code_cell(nb.cells[i].source) for i in shows)])
    NotebookClient(run, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    for i, c in zip(shows, run.cells[-len(shows):]):
        nb.cells[i].outputs = c.outputs
    nbformat.write(nb, path)
    return len(shows)


if __name__ == "__main__":
    for p in map(Path, sys.argv[1:]):
        t = time.perf_counter(); n = refresh(p.resolve())
        print(f"{p}: {n} cell(s) refreshed in {time.perf_counter() - t:.1f} s", flush=True)

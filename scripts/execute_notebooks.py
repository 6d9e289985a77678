"""Execute notebooks in place for committing (fast profile): each in a fresh kernel, the cells nbdev-test skips
(`#| slow`, `#| gpu`, `#| notest`, `eval: false`) left unrun with their source intact, widget state saved.

    python scripts/execute_notebooks.py [NOTEBOOK ...]     # default: index.ipynb and nbs/*.ipynb

Prints each notebook's wall time. Run `nbdev-clean` afterwards.
"""
import copy, json, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.notebooks import notebooks, runnable_cells, skip_flags  # noqa: E402


def execute(path: Path, timeout: int = 1800) -> float:
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    keep = set(runnable_cells(json.loads(nbformat.writes(nb)), skip_flags()))
    skipped = {i: c.source for i, c in enumerate(nb.cells) if c.cell_type == "code" and i not in keep}
    for i in skipped: nb.cells[i].source = ""
    t = time.perf_counter()
    # figures as retina PNGs (twice the pixels, shown at the same size: IPython stores the display size in the
    # output's metadata, which JupyterLab and the docs site honour); matplotlib's 100 dpi made small ticks unreadable
    NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                   extra_arguments=["--InlineBackend.figure_formats={'retina'}"],
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    wall = time.perf_counter() - t
    for i, src in skipped.items():
        nb.cells[i].source = src; nb.cells[i].outputs = []; nb.cells[i].execution_count = None
    nbformat.write(nb, path)
    return wall


if __name__ == "__main__":
    paths = [Path(p).resolve() for p in sys.argv[1:]] or notebooks(ROOT)
    for p in paths:
        print(f"{p.relative_to(ROOT)}: {execute(p):.1f} s", flush=True)

"""Execute notebooks in place for committing (fast profile): each in a fresh kernel, the cells nbdev-test skips
(`#| slow`, `#| gpu`, `#| notest`, `eval: false`) left unrun with their source intact, widget state saved.

    python scripts/execute_notebooks.py [NOTEBOOK ...]     # default: index.ipynb and nbs/*.ipynb

Prints each notebook's wall time. Run `nbdev-clean` afterwards.
"""
import copy, json, sys, time
from pathlib import Path
from queue import Empty

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.notebooks import notebooks, runnable_cells, skip_flags  # noqa: E402


def slice_waits(channel, step: float = 1.0):
    """Make `channel.get_msg(timeout)` wait in slices of `step` seconds, up to the same overall timeout.

    nbclient 0.11 waits for a cell's execute_reply with one long `shell_channel.get_msg(timeout=cell timeout)`; after a
    cell that displays widgets that wait sometimes never returns although the reply has arrived (jupyter/nbclient#312;
    here chapters 21 and 40 hung with an idle kernel). Polling again every `step` seconds picks the reply up."""
    get = channel.get_msg
    async def get_msg(timeout=None):
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = step if end is None else min(step, max(0.0, end - time.monotonic()))
            try: return await get(timeout=left)
            except Empty:
                if end is not None and time.monotonic() >= end: raise
    channel.get_msg = get_msg
    return channel


def client_class():
    "nbclient's NotebookClient whose kernel client waits for replies in slices (`slice_waits`)."
    from nbclient import NotebookClient
    class SlicedWaitClient(NotebookClient):
        async def async_start_new_kernel_client(self):
            kc = await super().async_start_new_kernel_client()
            slice_waits(kc.shell_channel)
            return kc
    return SlicedWaitClient


def execute(path: Path, timeout: int = 1800) -> float:
    import nbformat
    NotebookClient = client_class()
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

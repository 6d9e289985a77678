"""scripts/execute_notebooks.py: the committed notebooks' executor (fast profile) does not hang on a missed reply."""
import asyncio, importlib.util, json
from pathlib import Path
from queue import Empty

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("execute_notebooks", ROOT / "scripts" / "execute_notebooks.py")
ex = importlib.util.module_from_spec(spec); spec.loader.exec_module(ex)


class Channel:
    "A shell channel whose reply arrives after `misses` empty waits; records the timeouts it was asked to wait."
    def __init__(self, misses): self.misses, self.asked = misses, []
    async def get_msg(self, timeout=None):
        self.asked.append(timeout)
        if len(self.asked) <= self.misses: raise Empty
        return {"msg_type": "execute_reply"}


def test_slice_waits_polls_again_until_the_reply():
    ch = ex.slice_waits(Channel(misses=3), step=0.001)
    assert asyncio.run(ch.get_msg(timeout=None)) == {"msg_type": "execute_reply"}
    assert ch.asked[:1] == [0.001] and len(ch.asked) == 4          # never one unbounded wait: four slices


def test_slice_waits_keeps_the_overall_timeout():
    ch = ex.slice_waits(Channel(misses=10**9), step=0.001)
    with pytest.raises(Empty): asyncio.run(ch.get_msg(timeout=0.02))
    assert len(ch.asked) >= 2 and all(t <= 0.001 for t in ch.asked)  # sliced, and it gave up at the deadline


def test_executes_a_notebook_with_a_widget(tmp_path):
    pytest.importorskip("ipywidgets")
    cells = [dict(cell_type="code", id=f"c{i}", metadata={}, outputs=[], execution_count=None, source=s) for i, s in enumerate(
             ("import ipywidgets as w\nw.IntSlider(3)", "x = 40 + 2\nx"))]
    nb = dict(cells=cells, metadata=dict(kernelspec=dict(name="python3", display_name="Python 3", language="python")),
              nbformat=4, nbformat_minor=5)
    (p := tmp_path / "w.ipynb").write_text(json.dumps(nb))
    ex.execute(p, timeout=120)
    out = json.loads(p.read_text())
    assert "".join(out["cells"][1]["outputs"][0]["data"]["text/plain"]) == "42"
    assert "application/vnd.jupyter.widget-view+json" in out["cells"][0]["outputs"][0]["data"]

"""Notebook cells that the docs build runs on their own must be able to.

nbdev's docs pass (`ftlab docs`) executes, without the rest of the notebook, every code cell that contains an import
(and every exported or show_doc cell). A cell that imports something and also computes with names defined in other
cells then fails the docs build with a NameError that the notebook run never shows. Keep imports in cells of their own.
"""
import ast, json, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(ROOT.glob("nbs/*.ipynb")) + [ROOT / "index.ipynb"]


def mixed_cells(path: Path) -> list[str]:
    "First lines of the code cells of `path` that mix import statements with other code (exported cells excepted)."
    out = []
    for i, c in enumerate(json.loads(path.read_text())["cells"]):
        if c["cell_type"] != "code": continue
        src = "".join(c["source"])
        if any(l.startswith("#| export") for l in src.splitlines()): continue
        if re.search(r"^CLAIMS\s*=\s*claims\(", src, re.M): continue   # the claims cell runs on its own by design (stats.declared_claims)
        try: tree = ast.parse(src)
        except SyntaxError: continue   # cell magics, shell lines
        # nbdev's docs pass picks the cells with an import anywhere in them, nested in a function or an `if` too
        imports = any(isinstance(x, (ast.Import, ast.ImportFrom)) for x in ast.walk(tree))
        other = any(not isinstance(x, (ast.Import, ast.ImportFrom)) for x in tree.body)
        if imports and other: out.append(f"cell {i}: {src.strip().splitlines()[0][:70]}")
    return out


def test_mixed_cells_finds_a_mixed_cell(tmp_path):
    nb = dict(cells=[dict(cell_type="code", source="import os\nx = os.sep"), dict(cell_type="code", source="import os"),
                     dict(cell_type="code", source="#| export\nimport os\ndef f(): pass"),
                     dict(cell_type="code", source="def g():\n    import os\n    return os.sep")])
    (tmp_path / "n.ipynb").write_text(json.dumps(nb))
    assert mixed_cells(tmp_path / "n.ipynb") == ["cell 0: import os", "cell 3: def g():"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_imports_have_cells_of_their_own(nb):
    bad = mixed_cells(nb)
    assert not bad, f"{nb.relative_to(ROOT)}: move the imports of these cells into a cell of their own: {bad}"


def heading_jumps(path: Path) -> list[str]:
    """Headings in the markdown cells of `path` that go down more than one level (an H1 followed by an H3).

    The docs build (myst, warnings are errors) refuses them; this finds them in a second instead of after the build.
    Fenced code blocks are skipped, where `#` starts a comment, not a heading."""
    out, level = [], 0
    for i, c in enumerate(json.loads(path.read_text())["cells"]):
        if c["cell_type"] != "markdown": continue
        fenced = False
        for line in "".join(c["source"]).splitlines():
            if line.lstrip().startswith(("```", "~~~")): fenced = not fenced
            m = None if fenced else re.match(r"(#{1,6})\s+\S", line)
            if not m: continue
            new = len(m.group(1))
            if level and new > level + 1: out.append(f"cell {i}: H{level} to H{new}: {line[:70]}")
            level = new
    return out


def test_heading_jumps_finds_a_jump(tmp_path):
    nb = dict(cells=[dict(cell_type="markdown", source="# Title\n\n```\n### not a heading\n```"),
                     dict(cell_type="code", source="### a comment"),
                     dict(cell_type="markdown", source="### Too deep\n\n## Fine\n\n### Fine too")])
    (tmp_path / "n.ipynb").write_text(json.dumps(nb))
    assert heading_jumps(tmp_path / "n.ipynb") == ["cell 2: H1 to H3: ### Too deep"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_headings_go_down_one_level_at_a_time(nb):
    bad = heading_jumps(nb)
    assert not bad, f"{nb.relative_to(ROOT)}: the docs build refuses a heading more than one level below the last: {bad}"

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

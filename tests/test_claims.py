"""The claims ledger (results/claims.csv) is current, and the notebooks say what it says (issue 27).

(a) Every notebook that declares claims (`CLAIMS = claims(...)`) has exactly those claims in the ledger, judged on its
    current recording: evaluating them again on results/<chapter>.csv gives the same estimates and verdicts.
(b) Every markdown paragraph that cites a claim (`claim: NAME`) states its verdict and writes its intervals as the ledger has them.
(c) The recorded-results cell each notebook shows (`show_recorded`) prints the hash and date of its results CSV.
(d) No claim reports p = 0 or a zero-width interval.
"""
import json, re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ftlab.stats import CLAIM_COLUMNS, check_prose, declared_claims, evaluate_claims, load_claims, load_recorded

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
NOTEBOOKS = sorted((ROOT / "nbs").glob("*.ipynb")) + [ROOT / "index.ipynb"]
DECLARING = [p for p in NOTEBOOKS if declared_claims(p)[1]]
LEDGER = load_claims(RESULTS)
UPDATE = "`ftlab claims --update {}`"


def _cells(nb: Path, kind: str):
    for c in json.loads(nb.read_text())["cells"]:
        if c["cell_type"] == kind: yield c, "".join(c["source"]) if isinstance(c["source"], list) else c["source"]


def test_some_chapters_declare_claims():
    assert DECLARING, "no notebook declares its claims (CLAIMS = claims(...))"
    assert list(LEDGER.columns) == list(CLAIM_COLUMNS), f"results/claims.csv has columns {list(LEDGER.columns)}"


@pytest.mark.parametrize("nb", DECLARING, ids=lambda p: p.stem)
def test_ledger_is_current(nb):
    chapter, cs = declared_claims(nb)
    mine = LEDGER[LEDGER.chapter == chapter].reset_index(drop=True)
    cmd = UPDATE.format(nb.relative_to(ROOT))
    assert list(mine.claim) == [c.name for c in cs], f"results/claims.csv has claims {list(mine.claim)} for {chapter}, the notebook declares {[c.name for c in cs]}; run {cmd}"
    ex = RESULTS / f"{chapter}.examples.csv.gz"
    now = evaluate_claims(cs, load_recorded(chapter, RESULTS), chapter, examples=pd.read_csv(ex) if ex.exists() else None)
    for col in ("estimate", "lo", "hi", "p_holm"):
        np.testing.assert_allclose(mine[col].astype(float), now[col].astype(float), rtol=1e-6, atol=1e-9, equal_nan=True,
                                   err_msg=f"{chapter}: the ledger's {col} is not what its recording gives now; run {cmd}")
    assert list(mine.verdict) == list(now.verdict), f"{chapter}: ledger verdicts {list(mine.verdict)}, recording gives {list(now.verdict)}; run {cmd}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_prose_agrees_with_ledger(nb):
    ledger = LEDGER[LEDGER.chapter == nb.stem]
    problems = [p for _, md in _cells(nb, "markdown") for p in check_prose(md, ledger, nb.stem)]
    assert not problems, "\n".join(problems)


_SHOWN = re.compile(r"Recorded by `.*?` on (\S+) .*?(?:hash (\w+)|STALE)", re.S)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_shows_current_recording(nb):
    for c, src in _cells(nb, "code"):
        if not (m := re.search(r"show_recorded\(\s*[\"']([\w.-]+)[\"']", src)): continue
        chapter = m.group(1)
        if not (RESULTS / f"{chapter}.csv").exists(): continue
        rec = load_recorded(chapter, RESULTS); rec = rec[rec.profile == "medium"]
        text = "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", "")) for o in c.get("outputs", []))
        fix = f"run `python scripts/refresh_recorded.py {nb.relative_to(ROOT)}`"
        assert (s := _SHOWN.search(text)), f"{nb.name}: its show_recorded({chapter!r}) cell shows no recording ({text[:160]!r}); {fix}"
        assert s.group(1) in set(rec.date.astype(str)), f"{nb.name} shows the recording of {s.group(1)}; results/{chapter}.csv is of {sorted(set(rec.date))}; {fix}"
        assert s.group(2) in set(rec.code_hash.astype(str)), f"{nb.name} shows hash {s.group(2)}; results/{chapter}.csv has {sorted(set(rec.code_hash))}; {fix}"


def test_no_claim_reports_certainty_from_nothing():
    judged = LEDGER[LEDGER.verdict != "undetermined"]
    assert (judged.n_seeds >= 3).all(), judged[judged.n_seeds < 3][["chapter", "claim", "n_seeds"]]
    assert (judged.p > 0).all() and (judged.hi > judged.lo).all(), judged[["chapter", "claim", "p", "lo", "hi"]]
    und = LEDGER[LEDGER.verdict == "undetermined"]
    assert und.p_holm.isna().all() and und.why.notna().all(), und[["chapter", "claim", "p_holm", "why"]]


def test_book_page_shows_the_ledger():
    "nbs/99_claims.ipynb ('What this book shows, and how sure it is') shows the current ledger's counts and rows."
    nb = ROOT / "nbs/99_claims.ipynb"
    outs = {src.strip(): "".join("".join(o.get("data", {}).get("text/plain", "")) + "".join(o.get("text", "")) for o in c.get("outputs", []))
            for c, src in _cells(nb, "code")}
    fix = "run `python scripts/execute_notebooks.py nbs/99_claims.ipynb`"
    counts = outs.get("book = load_claims()\nverdict_counts(book)", "")
    total = re.search(r"^all\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", counts, re.M)
    assert total, f"the book page shows no verdict counts; {fix}"
    want = [int((LEDGER.verdict == v).sum()) for v in ("shown", "not shown", "contradicted", "equivalent", "undetermined")]
    assert [int(x) for x in total.groups()] == want, f"the book page shows counts {total.groups()}, the ledger has {want}; {fix}"
    table = next((v for k, v in outs.items() if k.endswith("book_table(book)")), "")
    assert all(name in table for name in LEDGER.claim), f"the book page's table lacks some of the ledger's claims; {fix}"

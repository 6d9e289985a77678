"""Record that a chapter's code change left its numbers where they were, so its recording stays valid.

    FTLAB_RESULTS_DIR=$PWD/bench/results/ci python scripts/execute_notebooks.py nbs/XX.ipynb   # fast rows, 2 threads
    python scripts/mark_neutral.py nbs/XX.ipynb [--ci-rows bench/results/ci]

The fast-profile rows in the CI-rows folder must have been made by the notebook's current code, and they must
reproduce the recording's fast rows within the tolerances tests/test_recorded.py applies (the same function decides).
Then one line (recorded hash -> current hash, date, evidence) is appended to results/neutral_changes.csv
(`ftlab.stats.mark_neutral`), and `check_fresh` / `show_recorded` report the recording as fresh. Nothing is written
when the rows are missing, made from other code, or differ: re-record the chapter instead.
"""
import argparse, os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebook", help="the chapter's notebook, e.g. nbs/60_domain_adaptation.ipynb")
    ap.add_argument("--ci-rows", default=os.environ.get("FTLAB_RESULTS_DIR") or str(ROOT / "bench/results/ci"),
                    help="folder of the fast rows made from the current code (default: $FTLAB_RESULTS_DIR or bench/results/ci)")
    a = ap.parse_args(argv)
    os.environ["FTLAB_RESULTS_DIR"] = str(Path(a.ci_rows).resolve())   # tests/test_recorded.py reads its CI rows from here
    import pandas as pd
    from ftlab.stats import check_fresh, code_hash, load_recorded, mark_neutral
    from tests import test_recorded as tr
    nb = Path(a.notebook).resolve(); chapter = nb.stem
    if not nb.exists(): print(f"mark_neutral: no notebook {a.notebook}.", file=sys.stderr); return 2
    rec = load_recorded(chapter, tr.RESULTS)
    now, old = code_hash(nb), sorted(set(rec.code_hash.dropna().astype(str)))
    fresh, msg = check_fresh(chapter, tr.RESULTS, nb)
    if fresh: print(f"{chapter}: nothing to mark. {msg}"); return 0
    if len(old) != 1:
        print(f"{chapter}: the recording mixes code hashes {old}; re-record it.", file=sys.stderr); return 1
    ci_csv = tr.CI_ROWS / f"{chapter}.csv"
    if not ci_csv.exists():
        print(f"{chapter}: no fast rows at {ci_csv}; make them with `FTLAB_RESULTS_DIR={tr.CI_ROWS} python "
              f"scripts/execute_notebooks.py {a.notebook}`.", file=sys.stderr); return 1
    ci = pd.read_csv(ci_csv); ci = ci[ci.profile == "fast"]
    made_by = sorted(set(ci.groupby(tr.KEY, dropna=False).code_hash.last().astype(str)))   # the rows the check compares
    if made_by != [now]:
        print(f"{chapter}: the fast rows in {ci_csv} were made by code {made_by}, not the notebook's current {now}; "
              f"execute the notebook again first.", file=sys.stderr); return 1
    status, why = tr.fast_rows_verdict(tr.RESULTS / f"{chapter}.csv")
    if status != "match":
        print(f"{chapter}: not neutral ({status}): {why}", file=sys.stderr); return 1
    from ftlab.stats import machine
    # one edge from the recording's hash straight to the current one: the evidence compares with the recording itself
    path = mark_neutral(chapter, old[0], now, f"{why.split(': ', 1)[-1]} (fast rows made by code {now}; {machine()})", tr.RESULTS)
    print(f"{chapter}: {old[0]} -> {now} marked numerically neutral in {path.relative_to(ROOT)}")
    print(check_fresh(chapter, tr.RESULTS, nb)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())

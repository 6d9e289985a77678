#!/usr/bin/env bash
# The ftlab test command (README): set up .venv if needed, fetch the bundled assets, run every
# notebook in the fast profile (nbdev-test) and then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, pinned: the CPU build (a plain `torch` would pull a multi-GB CUDA build)
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev]"
export FTLAB_PROFILE=${FTLAB_PROFILE:-fast} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
t0=$(date +%s)
ftlab fetch all
echo "assets ready in $(( $(date +%s) - t0 ))s"
t0=$(date +%s)
# Each chapter's record() calls append their fast-profile result rows to FTLAB_RESULTS_DIR (absolute: the notebooks
# run in nbs/); tests/test_recorded.py compares them with the recorded results/<notebook>.csv.
export FTLAB_RESULTS_DIR="$PWD/bench/results/ci"
rm -rf "$FTLAB_RESULTS_DIR" && mkdir -p "$FTLAB_RESULTS_DIR"
# Every notebook through nbdev's own test runner (nbdev.test.test_nb with pyproject's tst_flags, exactly what
# nbdev-test runs), one at a time in a fresh process so each gets both cores as on a reader's laptop; the
# runner also records each notebook's time and peak memory in bench/results/notebooks.csv, which
# tests/test_budgets.py then checks against the budgets (exit status 1 if any notebook fails).
python -m bench.notebooks --engine nbdev
echo "notebooks passed in $(( $(date +%s) - t0 ))s"
python -m pytest "$@"

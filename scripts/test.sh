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
# one notebook at a time: each gets both cores, as a reader's laptop would (2 workers x 2 torch threads thrash)
nbdev-test --timing --n_workers "${NBDEV_WORKERS:-1}"
echo "notebooks passed in $(( $(date +%s) - t0 ))s"
python -m pytest "$@"

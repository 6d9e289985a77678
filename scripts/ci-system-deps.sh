#!/usr/bin/env bash
# System packages the tests need, installed from Debian's packages (called by .ci/run as root).
# - chromium: the docs-site and JupyterLab browser tests (tests/test_docs_site.py, tests/test_jupyterlab.py)
# - npm: `ftlab docs` fetches MathJax and the ipywidgets manager with it (into docs/node_modules)
# Nothing is installed when it is already there, so a warm machine spends no time here.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "ci-system-deps: need root to install ${need[*]}" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${need[@]}"
fi
/usr/bin/chromium --version 2>/dev/null || true

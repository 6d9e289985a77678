"""JupyterLab smoke test: a reader opens a chapter notebook in JupyterLab and plays with its widget.

Starts `jupyter lab` headless on 127.0.0.1 with a random token, opens a copy of nbs/95_docs.ipynb in
Debian's Chromium driven by Playwright (every host but the loopback unresolvable), runs the
widget cells with Shift+Enter, checks that the slider and the `interact` output render, then moves
the slider with the keyboard and checks that the kernel recomputed the output."""
from __future__ import annotations
import os, secrets, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

from browser import CHROMIUM_FLAGS, find_chromium

ROOT = Path(__file__).resolve().parents[1]
NB = "nbs/95_docs.ipynb"

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "A JupyterLab server on a copy of the notebook; yields its base URL with the token."
    work = tmp_path_factory.mktemp("lab")
    (work/"nbs").mkdir(); shutil.copy(ROOT/NB, work/NB)  # a copy: nothing the test does can touch the repo
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, **{k: str(work/f".{k.lower()}") for k in
           ("JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR", "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR")}}
    log = open(work/"lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
                             f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
                             f"--ServerApp.root_dir={work}", "--LabApp.extension_manager=readonly"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if proc.poll() is not None: break
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200: break
            except OSError: time.sleep(0.5)
        else: pytest.fail("jupyter lab did not answer within 60 s:\n" + (work/"lab.log").read_text()[-3000:])
        assert proc.poll() is None, "jupyter lab exited:\n" + (work/"lab.log").read_text()[-3000:]
        yield base, token
    finally:
        proc.terminate()
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait(timeout=10)
        log.close()

def _has(page, text: str, timeout=60000):
    page.wait_for_function("t => [...document.querySelectorAll('.widget-interact .widget-output')].some(e => e.innerText.includes(t))",
                           arg=text, timeout=timeout)

def test_widget_cell_runs_renders_and_responds(lab):
    chromium = find_chromium()
    try: from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI", "").lower() == "true": pytest.fail("playwright is missing (it is in the dev extra)")
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    base, token = lab
    flags = [f for f in CHROMIUM_FLAGS if f != "--headless"]  # Playwright adds its own headless flag
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=flags, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.set_default_timeout(60000)
            page.goto(f"{base}/lab/tree/{NB}?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-CodeCell")
            # nbdev-clean strips the kernelspec, so JupyterLab asks which kernel: take the default (Python 3)
            try: page.click(".jp-Dialog .jp-mod-accept", timeout=15000)
            except Exception: pass
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")

            def run(marker: str):
                cell = page.locator(".jp-CodeCell").filter(has_text=marker).first
                cell.scroll_into_view_if_needed()
                cell.locator(".jp-InputArea-editor").click()
                page.keyboard.press("Shift+Enter")
                return cell

            run("import ipywidgets as widgets")
            cell = run("widgets.IntSlider(")
            slider = cell.locator(".jp-OutputArea-output .widget-slider")
            slider.wait_for()
            assert slider.locator(".widget-readout").inner_text().strip() == "10"

            cell = run("@widgets.interact")
            _has(page, "1² + … + 10² = 385 = 385")
            handle = cell.locator(".widget-interact [role=slider]").first
            handle.focus()
            page.keyboard.press("ArrowRight"); page.keyboard.press("ArrowRight")
            _has(page, "1² + … + 12² = 650 = 650", timeout=30000)  # the kernel recomputed: the widget is live
            assert cell.locator(".widget-interact .widget-readout").inner_text().strip() == "12"
        finally:
            browser.close()

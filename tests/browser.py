"Helpers for the browser tests: a bounded loopback static server and headless Debian Chromium."
from __future__ import annotations
import functools, os, shutil, subprocess, tempfile, threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import pytest

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  # every host but the loopback server is unreachable: no CDN can help a page render
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]

def find_chromium() -> str:
    "Path of a Chromium binary; fail under CI (CI=true) when there is none, else skip."
    for c in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if c and Path(c).exists(): return c
    msg = "Chromium not found (apt-get install chromium; scripts/ci-system-deps.sh does it in CI)"
    if os.environ.get("CI", "").lower() == "true": pytest.fail(msg)
    pytest.skip(msg)

class StaticServer:
    "Serve `root` on 127.0.0.1 (a free port) from a daemon thread; records (path, status) of every request."
    def __init__(self, root):
        self.root, self.log = Path(root), []
        log = self.log
        class Handler(SimpleHTTPRequestHandler):
            def log_request(self, code="-", size="-"): log.append((self.path, int(code) if str(code).isdigit() else code))
            def log_message(self, *a): pass
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(self.root)))
        self.httpd.timeout = 5
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    def __enter__(self): self.thread.start(); return self
    def __exit__(self, *a):
        self.httpd.shutdown(); self.httpd.server_close(); self.thread.join(timeout=10)

def dump_page(chromium: str, url: str, budget_ms: int = 15000, timeout: int = 90, window: str = "1280,900") -> tuple[str, list[str]]:
    """The DOM of `url` after the page's scripts ran (`--dump-dom` with a virtual time budget), and the page's
    JavaScript console messages (errors and uncaught exceptions included), as Chromium logs them."""
    with tempfile.TemporaryDirectory(prefix="ftlab-chromium-") as prof:
        r = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={prof}", "--enable-logging=stderr", "--v=0",
                            f"--window-size={window}", "--dump-dom", f"--virtual-time-budget={budget_ms}", url],
                           capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0 and "<html" in r.stdout, f"chromium failed on {url} ({r.returncode}): {r.stderr[-2000:]}"
    return r.stdout, [l.split("CONSOLE", 1)[1] for l in r.stderr.splitlines() if ":CONSOLE" in l]

def dump_dom(chromium: str, url: str, budget_ms: int = 15000, timeout: int = 90) -> str:
    "The DOM of `url` after the page's scripts ran (`--dump-dom` with a virtual time budget)."
    return dump_page(chromium, url, budget_ms, timeout)[0]

"""The dashboard served on a free local port for the tools that drive it in a browser (screenshots, timings)."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise SystemExit("Debian's chromium is needed: apt-get install chromium")
    return path


@contextlib.contextmanager
def running_app(env: dict | None = None, args: list[str] | None = None):
    """Yield the base URL of `streamlit run app.py [-- args]`, stopped on exit."""
    with serving(env, args) as (url, _):
        yield url


@contextlib.contextmanager
def serving(env: dict | None = None, args: list[str] | None = None):
    """Yield (base URL, server process) of `streamlit run app.py [-- args]`, stopped on exit."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
               "--server.address", "127.0.0.1"] + (["--", *args] if args else [])
    server = subprocess.Popen(command, cwd=ROOT, env=os.environ | (env or {}), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.terminate()
        server.wait(timeout=30)

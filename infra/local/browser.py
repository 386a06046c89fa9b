"""Headless Chromium (Debian's) over the DevTools protocol: screenshots of the UIs, and a user's clicks in tests.

No browser-automation framework: Playwright's browsers cannot be downloaded here, and the few DevTools
calls needed (navigate, evaluate, cookies, screenshot) are plain JSON over the page's WebSocket.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runtime.launcher import free_port


class Page:
    """One browser tab: DevTools calls over its WebSocket."""

    def __init__(self, ws: Any) -> None:
        self.ws, self._seq = ws, 0

    def call(self, method: str, **params: Any) -> dict:
        self._seq += 1
        self.ws.send(json.dumps({"id": self._seq, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._seq:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in out:
            raise RuntimeError(f"page script failed: {out['exceptionDetails'].get('text')}")
        return out.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout_s: float = 30.0, what: str = "") -> None:
        """Poll a JavaScript expression (e.g. a querySelector) until it is truthy."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.evaluate(f"!!({expression})"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"page: {what or expression} not seen after {timeout_s:.0f}s")
            time.sleep(0.5)

    def open(self, url: str, cookies: list[dict] | None = None, width: int = 1500, height: int = 900) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)
        for c in cookies or ():
            self.call("Network.setCookie", **c)
        self.call("Page.navigate", url=url)

    def screenshot(self, out: str | Path) -> str:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return str(out)


@contextmanager
def chromium_page(timeout_s: float = 30.0) -> Iterator[Page]:
    """A headless Chromium with one page; stopped (and its profile removed) on exit."""
    from websockets.sync.client import connect

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise RuntimeError("chromium not found: apt-get install -y chromium")
    port = free_port()
    profile = tempfile.mkdtemp(prefix="tierflow-chromium-")
    proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                             "--disable-background-networking", f"--remote-debugging-port={port}",
                             f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        targets: list[dict] = []
        while not targets:
            if time.monotonic() > deadline:
                raise RuntimeError("headless chromium did not open its DevTools port")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2) as r:  # noqa: S310
                    targets = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            except OSError:
                time.sleep(0.3)
        with connect(targets[0]["webSocketDebuggerUrl"], max_size=64 * 2**20) as ws:
            yield Page(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def airflow_cookie(api_url: str, token: str) -> dict:
    """The cookie Airflow's UI reads its JWT from."""
    import urllib.parse

    return {"name": "_token", "value": token, "domain": urllib.parse.urlparse(api_url).hostname, "path": "/"}

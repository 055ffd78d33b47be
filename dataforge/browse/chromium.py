"""Headless Chromium driven over the DevTools protocol (CDP), for the browser's UI test and the
script that makes the docs' screenshot: no Playwright, no browser download -- the system
Chromium (``chromium`` on Debian; ``scripts/test`` installs it) and a websocket (``websockets``,
installed with uvicorn).

    with Chromium() as browser:
        page = browser.new_page(1400, 900)
        page.goto("http://127.0.0.1:8765/")
        page.wait_for("document.body.dataset.ready === '1'")
        page.press("j")
        png = page.screenshot()
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class ChromiumError(RuntimeError):
    """Chromium could not be started or driven, or a page expression failed."""


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Page:
    """One tab, attached through the browser's websocket (a flat CDP session)."""

    def __init__(self, browser: Chromium, session: str):
        self.browser, self.session = browser, session

    def send(self, method: str, **params: Any) -> dict:
        return self.browser.send(method, session=self.session, **params)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise ChromiumError(f"{expression[:80]!r}: {d.get('exception', {}).get('description') or d.get('text')}")
        return r.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Wait until ``expression`` is truthy in the page; returns its value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.evaluate(expression)
            except ChromiumError:
                last = None
            if last:
                return last
            time.sleep(0.05)
        raise ChromiumError(f"timed out after {timeout:.0f} s waiting for {expression!r} (last value {last!r})")

    def press(self, key: str) -> None:
        """One key press as a user makes it (keydown with its text, keyup)."""
        special = {"Enter": ("Enter", "\r", 13), "Escape": ("Escape", "", 27)}
        name, text, code = special.get(key, (key, key, ord(key.upper()) if len(key) == 1 else 0))
        self.send("Input.dispatchKeyEvent", type="keyDown", key=name, text=text, unmodifiedText=text,
                  windowsVirtualKeyCode=code)
        self.send("Input.dispatchKeyEvent", type="keyUp", key=name, windowsVirtualKeyCode=code)

    def type(self, text: str) -> None:
        self.send("Input.insertText", text=text)

    def click(self, selector: str) -> None:
        """Click the middle of the first element matching ``selector`` with the mouse."""
        box = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null; "
                            "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                            "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        if not box:
            raise ChromiumError(f"no element matches {selector!r}")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])


class Chromium:
    """A headless Chromium process and its DevTools websocket (a context manager)."""

    def __init__(self, binary: str | None = None, timeout: float = 60.0):
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise ChromiumError("headless Chromium not found (Debian: apt-get install chromium)")
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._profile: str | None = None
        self._proc: subprocess.Popen | None = None
        self._ws: Any = None

    def __enter__(self) -> Chromium:
        from websockets.sync.client import connect

        self._profile = tempfile.mkdtemp(prefix="dataforge-chromium-")
        self._proc = subprocess.Popen(
            [self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--disable-extensions", "--disable-dev-shm-usage", "--remote-debugging-port=0",
             f"--user-data-dir={self._profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = None
        deadline = time.monotonic() + self.timeout
        assert self._proc.stderr is not None
        seen = []
        while time.monotonic() < deadline:
            line = self._proc.stderr.readline()
            if not line:
                if self._proc.poll() is not None:
                    break
                continue
            seen.append(line)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                url = m.group(1)
                break
        if url is None:
            self.__exit__(None, None, None)
            raise ChromiumError("Chromium did not start: " + "".join(seen[-10:]))
        self._ws = connect(url, max_size=None, open_timeout=self.timeout)
        return self

    def send(self, method: str, session: str | None = None, **params: Any) -> dict:
        """Send one command and return its result (events arriving meanwhile are skipped)."""
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self._ws.send(json.dumps(msg))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            reply = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise ChromiumError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
        raise ChromiumError(f"{method}: no answer in {self.timeout:.0f} s")

    def new_page(self, width: int = 1400, height: int = 900) -> Page:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        page = Page(self, session)
        page.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        page.send("Page.enable")
        page.send("Runtime.enable")
        return page

    def __exit__(self, *_: object) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # noqa: BLE001 - closing a socket the browser may have dropped
                pass
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
            if self._proc.stderr is not None:
                self._proc.stderr.close()
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)


def save_png(data: bytes, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path

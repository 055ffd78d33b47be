"""A fake OpenAI-compatible server on 127.0.0.1 for fault-injection tests (standard library only).

    with FakeOpenAI() as srv:
        srv.script(["429:2", "500", "ok"])   # the next three chat requests, in order
        client = openai.OpenAI(base_url=srv.base_url, api_key="x")
        ...
        assert srv.chat_count == 3

Endpoints: ``GET /v1/models`` and ``POST /v1/chat/completions``. Every request is recorded in
``srv.requests`` (dicts with ``method``, ``path``, ``headers``, ``json``).

Each chat request pops the next action of the script; an empty script means
``srv.default_action`` (``"ok"`` unless changed), except that with ``fail_rate > 0`` a seeded
fraction of those default requests get ``"500"`` instead. Actions:

``ok``             a valid ``chat.completion`` with usage; content = ``srv.responder(body)``
``length``         like ok, but ``finish_reason: "length"``
``429``            rate limited; ``429:<v>`` sends ``Retry-After: <v>`` (seconds or HTTP date,
                   default ``1``); ``429ms:<n>`` sends ``retry-after-ms: <n>`` instead
``500`` ``503`` ``400``  that status with an OpenAI-style error body (any 3-digit status works)
``timeout``        sleep ``srv.timeout_sleep`` seconds (longer than the client's timeout), then ok
``malformed``      200, JSON content type, body ``{"choices": [`` (truncated, not JSON)
``empty_choices``  200 with a JSON completion that has no ``choices``

``srv.delay_s`` (default 0) delays every chat answer; ``srv.in_flight`` / ``srv.max_in_flight``
track concurrent chat requests, to check a client's concurrency bound.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def echo_responder(body: dict) -> str:
    """Deterministic text from the last user message and the ``seed``."""
    user = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    last = user[-1] if user else ""
    digest = hashlib.sha256(f"{last}\x00{body.get('seed')}".encode()).hexdigest()[:8]
    return f"Echo ({digest}, seed={body.get('seed')}): {last}"


class FakeOpenAI:
    def __init__(
        self,
        *,
        responder: Callable[[dict], str] = echo_responder,
        default_action: str = "ok",
        fail_rate: float = 0.0,
        fail_seed: int = 0,
        timeout_sleep: float = 2.0,
        delay_s: float = 0.0,
        model: str = "fake-model",
    ) -> None:
        self.responder = responder
        self.default_action = default_action
        self.fail_rate = fail_rate
        self.fail_rng = random.Random(fail_seed)
        self.timeout_sleep = timeout_sleep
        self.delay_s = delay_s
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.actions_taken: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._script: deque[str] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # interrupts "timeout" sleeps on shutdown
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control

    def script(self, actions: Iterable[str]) -> None:
        """Queue actions for the next chat requests (appended to any still queued)."""
        with self._lock:
            self._script.extend(actions)

    @property
    def count(self) -> int:
        """All requests received (any endpoint)."""
        with self._lock:
            return len(self.requests)

    @property
    def chat_count(self) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r["path"].endswith("/chat/completions"))

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def _next_action(self) -> str:
        with self._lock:
            if self._script:
                action = self._script.popleft()
            elif self.fail_rate > 0 and self.fail_rng.random() < self.fail_rate:
                action = "500"
            else:
                action = self.default_action
            self.actions_taken.append(action)
            return action

    # -- lifecycle

    def start(self) -> "FakeOpenAI":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        # a short poll interval makes shutdown() (which waits for the next poll) quick
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- responses

    def completion(self, body: dict, finish_reason: str = "stop") -> dict:
        text = self.responder(body)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(text.split()),
                "total_tokens": prompt_tokens + len(text.split()),
            },
        }


def _make_handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "FakeOpenAI/1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def _record(self, body: Any) -> None:
            with fake._lock:
                fake.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "json": body})

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass

        def do_GET(self) -> None:
            self._record(None)
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": fake.model, "object": "model", "owned_by": "fake"}]})
            else:
                self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = None
            self._record(body)
            if self.path.rstrip("/") != "/v1/chat/completions" or not isinstance(body, dict):
                self._send(404 if body is not None else 400, {"error": {"message": "bad request", "type": "invalid_request_error"}})
                return
            with fake._lock:
                fake.in_flight += 1
                fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            try:
                if fake.delay_s:
                    fake._stopping.wait(fake.delay_s)
                self._chat(fake._next_action(), body)
            finally:
                with fake._lock:
                    fake.in_flight -= 1

        def _chat(self, action: str, body: dict) -> None:
            name, _, arg = action.partition(":")
            if name in ("ok", "length"):
                self._send(200, fake.completion(body, "length" if name == "length" else "stop"))
            elif name == "429":
                self._send(429, _error("rate limited", "rate_limit_exceeded"), {"Retry-After": arg or "1"})
            elif name == "429ms":
                self._send(429, _error("rate limited", "rate_limit_exceeded"), {"retry-after-ms": arg or "1000"})
            elif name == "timeout":
                fake._stopping.wait(fake.timeout_sleep)
                self._send(200, fake.completion(body))
            elif name == "malformed":
                self._send(200, b'{"choices": [')
            elif name == "empty_choices":
                reply = fake.completion(body)
                del reply["choices"]
                self._send(200, reply)
            elif name.isdigit() and len(name) == 3:
                self._send(int(name), _error(f"injected HTTP {name}", f"http_{name}"))
            else:
                raise ValueError(f"unknown fake action {action!r}")

    return Handler


def _error(message: str, code: str) -> dict:
    return {"error": {"message": message, "type": "fake_error", "param": None, "code": code}}

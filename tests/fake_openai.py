"""A fake OpenAI-compatible server on 127.0.0.1 for fault-injection tests (standard library only).

    with FakeOpenAI() as srv:
        srv.script(["429:2", "500", "ok"])   # the next three chat requests, in order
        client = openai.OpenAI(base_url=srv.base_url, api_key="x")
        ...
        assert srv.chat_count == 3

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` (text
completions; ``srv.serves_completions = False`` makes it answer 404). Every request is recorded in
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

``n``: with ``srv.honours_n`` (default True) a request with ``n`` gets ``n`` choices, choice j
written by the responder as if the request had ``seed + j`` (so it equals the answer to a
separate request with that seed); usage sums the choices. With ``honours_n=False`` the server
answers one choice whatever ``n`` is, as llama.cpp's server does.

``srv.refuses_json_schema = True`` answers a chat request whose ``response_format`` type is
``json_schema`` as llama-cpp-python's server does (500, a validation error naming the literal),
without taking a script action; ``{"type": "json_object", "schema": ...}`` is served normally.

Batch API: ``POST /v1/files`` (multipart upload), ``GET /v1/files/{id}`` and
``GET /v1/files/{id}/content``; ``POST /v1/batches``, ``GET /v1/batches`` (newest first),
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``. A batch is ``validating`` when
created; each ``GET`` is a poll: the first moves it to ``in_progress`` (or ``failed`` when its
input file is invalid or ``srv.batch_fail`` is set), the ``srv.batch_polls_to_complete``-th
(default 2) answers every line, in order, with the script and the responder exactly like a chat
request: ``ok``/``length`` (and ``timeout``: a batch has no client timeout) go to the output file
with ``response.status_code`` 200, ``malformed``/``empty_choices`` too with an unusable body, a
status (``500``, ``429``, ...) goes to the error file with that ``response.status_code``. With
``srv.batch_expire`` the batch ends ``expired`` after answering its first
``srv.batch_expire_answered`` lines; the rest go to the error file with code ``batch_expired``.
A cancelled batch is ``cancelling`` until the next poll, then ``cancelled`` (unanswered lines:
code ``batch_cancelled``). ``srv.script_batch_creates(["500", "lost"])`` makes the next
``POST /v1/batches`` fail: ``500`` creates nothing, ``lost`` creates the batch but answers 500
(a lost reply). ``srv.files``, ``srv.batches``, ``srv.file_uploads``, ``srv.batch_creations``.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import itertools
import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


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
        honours_n: bool = True,
    ) -> None:
        self.honours_n = honours_n
        self.refuses_json_schema = False
        # a request with ``logprobs: true`` gets per-token logprobs (responders.fake_token_logprobs)
        # of ``tokenize(text)``; ``logprobs_shape``: "chat" (content entries) or "legacy"
        # ({tokens, token_logprobs, top_logprobs: [{token: logprob}]}, the completions shape)
        self.tokenize: Callable[[str], list[str]] | None = None
        self.logprobs_shape = "chat"
        # POST /v1/completions (text completions: a ``prompt``, choices with ``text``); False
        # answers 404 there, as a provider without the endpoint does
        self.serves_completions = True
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
        # Batch API state (see the module docstring); guarded by _batch_lock, which may take
        # _lock inside it (never the other way round).
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_polls_to_complete = 2
        self.batch_fail = False
        self.batch_expire = False
        self.batch_expire_answered = 0
        self._batch_create_faults: deque[str] = deque()
        self._batch_polls: dict[str, int] = {}
        self._batch_lines: dict[str, list[dict]] = {}
        self._ids = itertools.count(1)
        self._batch_lock = threading.Lock()
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
    def completions_count(self) -> int:
        """Requests to the text-completions endpoint (``/v1/completions``)."""
        with self._lock:
            return sum(1 for r in self.requests if r["path"].rstrip("/").endswith("/v1/completions"))

    @property
    def chat_count(self) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r["path"].endswith("/chat/completions"))

    def script_batch_creates(self, faults: Iterable[str]) -> None:
        """Faults for the next ``POST /v1/batches``: a status (``500``) or ``lost``."""
        with self._batch_lock:
            self._batch_create_faults.extend(faults)

    @property
    def file_uploads(self) -> int:
        """Files uploaded by clients (the server's own output files not counted)."""
        with self._batch_lock:
            return sum(1 for f in self.files.values() if f["purpose"] != "batch_output")

    @property
    def batch_creations(self) -> int:
        """Batches created (including those whose creation reply was ``lost``)."""
        with self._batch_lock:
            return len(self.batches)

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

    def text_completion(self, body: dict, finish_reason: str = "stop") -> dict:
        """A ``text_completion`` for ``/v1/completions``: ``text`` = ``srv.responder(body)`` (the
        body has ``prompt``, no ``messages``); usage counts words."""
        text = self.responder(body)
        prompt_tokens = len(str(body.get("prompt", "")).split())
        completion_tokens = len(text.split())
        return {"id": f"cmpl-{len(self.requests)}", "object": "text_completion", "created": int(time.time()),
                "model": body.get("model", self.model),
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    def completion(self, body: dict, finish_reason: str = "stop") -> dict:
        n = int(body.get("n") or 1) if self.honours_n else 1
        seed = body.get("seed")
        texts = [self.responder(body if j == 0 or seed is None else {**body, "seed": seed + j}) for j in range(n)]
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion_tokens = sum(len(t.split()) for t in texts)
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [
                {"index": j, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason,
                 **({"logprobs": self.logprobs_for(text, int(body.get("top_logprobs") or 0))}
                    if body.get("logprobs") else {})}
                for j, text in enumerate(texts)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def logprobs_for(self, text: str, k: int) -> dict:
        from responders import fake_token_logprobs, split_tokens

        content = fake_token_logprobs((self.tokenize or split_tokens)(text), k)
        if self.logprobs_shape == "legacy":
            return {"tokens": [e["token"] for e in content], "token_logprobs": [e["logprob"] for e in content],
                    "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in content]}
        return {"content": content}

    # -- batch API (files and batches); each method returns (status, payload, content type)

    def upload_file(self, raw: bytes, content_type: str) -> tuple[int, Any, str]:
        fields = _parse_multipart(raw, content_type)
        if "file" not in fields or "purpose" not in fields:
            return 400, _error("a multipart 'file' and 'purpose' are required", "invalid_request"), JSON
        filename, content = fields["file"]
        with self._batch_lock:
            return 200, self._store_file(content, filename or "upload", fields["purpose"][1].decode()), JSON

    def _store_file(self, content: bytes, filename: str, purpose: str) -> dict:
        """Store a file (the caller holds ``_batch_lock``); returns its public object."""
        fid = f"file-{next(self._ids)}"
        self.files[fid] = {"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                           "filename": filename, "purpose": purpose, "status": "processed", "content": content}
        return _file_object(self.files[fid])

    def batch_get(self, url: str) -> tuple[int, Any, str] | None:
        """``GET`` on a files or batches path (a poll, for one batch); None for other paths."""
        parts = urlsplit(url).path.strip("/").split("/")
        with self._batch_lock:
            if parts[:2] == ["v1", "files"] and len(parts) in (3, 4):
                f = self.files.get(parts[2])
                if f is None or (len(parts) == 4 and parts[3] != "content"):
                    return 404, _error(f"No such File object: {parts[2]}", "not_found"), JSON
                return (200, f["content"], "application/octet-stream") if len(parts) == 4 else (200, _file_object(f), JSON)
            if parts == ["v1", "batches"]:
                data = list(reversed(self.batches.values()))
                return 200, {"object": "list", "data": data, "has_more": False,
                             "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}, JSON
            if parts[:2] == ["v1", "batches"] and len(parts) == 3:
                if parts[2] not in self.batches:
                    return 404, _error(f"No such batch: {parts[2]}", "not_found"), JSON
                return 200, self._poll_batch(parts[2]), JSON
        return None

    def batch_post(self, url: str, body: dict) -> tuple[int, Any, str] | None:
        """``POST /v1/batches`` and ``/v1/batches/{id}/cancel``; None for other paths."""
        parts = urlsplit(url).path.strip("/").split("/")
        with self._batch_lock:
            if parts == ["v1", "batches"]:
                return self._create_batch(body)
            if parts[:2] == ["v1", "batches"] and len(parts) == 4 and parts[3] == "cancel":
                batch = self.batches.get(parts[2])
                if batch is None:
                    return 404, _error(f"No such batch: {parts[2]}", "not_found"), JSON
                if batch["status"] not in ("validating", "in_progress"):
                    return 400, _error(f"cannot cancel a batch that is {batch['status']}", "invalid_request"), JSON
                batch.update(status="cancelling", cancelling_at=int(time.time()))
                return 200, batch, JSON
        return None

    def _create_batch(self, body: dict) -> tuple[int, Any, str]:
        fault = self._batch_create_faults.popleft() if self._batch_create_faults else None
        if fault is not None and fault != "lost":
            return int(fault), _error(f"injected HTTP {fault}", f"http_{fault}"), JSON
        input_file = self.files.get(body.get("input_file_id", ""))
        if input_file is None or input_file["purpose"] != "batch":
            return 400, _error("input_file_id must name an uploaded file with purpose 'batch'", "invalid_request"), JSON
        if body.get("endpoint") != "/v1/chat/completions":
            return 400, _error("this fake serves only /v1/chat/completions batches", "invalid_request"), JSON
        if body.get("completion_window") != "24h":
            return 400, _error("completion_window must be '24h'", "invalid_request"), JSON
        bid = f"batch_{next(self._ids)}"
        now = int(time.time())
        self.batches[bid] = {
            "id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None,
            "input_file_id": input_file["id"], "completion_window": body["completion_window"],
            "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": now,
            "in_progress_at": None, "expires_at": now + 86_400, "finalizing_at": None, "completed_at": None,
            "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
        }
        self._batch_polls[bid] = 0
        if fault == "lost":
            return 500, _error("injected: the batch was created but this reply was lost", "http_500"), JSON
        return 200, self.batches[bid], JSON

    def _poll_batch(self, bid: str) -> dict:
        """One poll moves a batch along its lifecycle (the caller holds ``_batch_lock``)."""
        batch = self.batches[bid]
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            return batch
        self._batch_polls[bid] += 1
        now = int(time.time())
        if batch["status"] == "cancelling":
            self._finish_batch(batch, answered=0, status="cancelled", unanswered_code="batch_cancelled")
            return batch
        if batch["status"] == "validating":
            lines, errors = _validate_batch_input(self.files[batch["input_file_id"]]["content"], batch["endpoint"])
            if self.batch_fail and not errors:
                errors = [{"code": "injected_failure", "message": "injected batch failure", "param": None, "line": None}]
            if errors:
                batch.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
                return batch
            self._batch_lines[bid] = lines
            batch.update(status="in_progress", in_progress_at=now)
            batch["request_counts"]["total"] = len(lines)
        if self._batch_polls[bid] >= self.batch_polls_to_complete:
            if self.batch_expire:
                self._finish_batch(batch, self.batch_expire_answered, "expired", "batch_expired")
            else:
                self._finish_batch(batch, len(self._batch_lines[bid]), "completed", "")
        return batch

    def _finish_batch(self, batch: dict, answered: int, status: str, unanswered_code: str) -> None:
        """Answer the first ``answered`` lines; the rest go to the error file with the code."""
        output: list[dict] = []
        errors: list[dict] = []
        for i, line in enumerate(self._batch_lines.get(batch["id"], [])):
            if i < answered:
                record = self._batch_answer(line)
                (output if record["response"]["status_code"] == 200 else errors).append(record)
            else:
                errors.append({"id": f"batch_req_{next(self._ids)}", "custom_id": line["custom_id"], "response": None,
                               "error": {"code": unanswered_code, "message": f"request not executed: batch {status}"}})
        for records, key in ((output, "output_file_id"), (errors, "error_file_id")):
            if records:
                content = "".join(json.dumps(r) + "\n" for r in records).encode()
                batch[key] = self._store_file(content, f"{batch['id']}_{key[:-8]}.jsonl", "batch_output")["id"]
        batch["request_counts"].update(completed=len(output), failed=len(errors))
        batch.update(status=status, finalizing_at=int(time.time()))
        batch[f"{status}_at"] = int(time.time())

    def _batch_answer(self, line: dict) -> dict:
        """One batch line answered like a chat request: the next scripted action decides."""
        action = self._next_action()
        name, _, _ = action.partition(":")
        body = line["body"]
        payload: Any
        if name in ("ok", "length", "timeout"):
            status, payload = 200, self.completion(body, "length" if name == "length" else "stop")
        elif name == "malformed":
            status, payload = 200, '{"choices": ['
        elif name == "empty_choices":
            status, payload = 200, {k: v for k, v in self.completion(body).items() if k != "choices"}
        elif name in ("429", "429ms"):
            status, payload = 429, _error("rate limited", "rate_limit_exceeded")
        elif name.isdigit() and len(name) == 3:
            status, payload = int(name), _error(f"injected HTTP {name}", f"http_{name}")
        else:
            raise ValueError(f"unknown fake action {action!r}")
        n = next(self._ids)
        return {"id": f"batch_req_{n}", "custom_id": line["custom_id"],
                "response": {"status_code": status, "request_id": f"req_{n}", "body": payload}, "error": None}


def _make_handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "FakeOpenAI/1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def _record(self, body: Any) -> None:
            with fake._lock:
                fake.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "json": body})

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None,
                  content_type: str = JSON) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self._leave_flight()  # before the client can read the answer and send its next request
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
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
            elif (reply := fake.batch_get(self.path)) is not None:
                status, payload, content_type = reply
                self._send(status, payload, content_type=content_type)
            else:
                self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if urlsplit(self.path).path.rstrip("/") == "/v1/files":
                self._record(None)  # multipart: recorded without its content
                status, payload, content_type = fake.upload_file(raw, self.headers.get("Content-Type", ""))
                self._send(status, payload, content_type=content_type)
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = None
            self._record(body)
            if isinstance(body, dict) and (reply := fake.batch_post(self.path, body)) is not None:
                status, payload, content_type = reply
                self._send(status, payload, content_type=content_type)
                return
            if self.path.rstrip("/") == "/v1/completions" and isinstance(body, dict) and fake.serves_completions:
                action = fake._next_action()  # the script applies to text completions too
                name = action.partition(":")[0]
                if name in ("ok", "length"):
                    self._send(200, fake.text_completion(body, "length" if name == "length" else "stop"))
                else:
                    self._chat(action, body)  # faults look the same on both endpoints
                return
            if self.path.rstrip("/") != "/v1/chat/completions" or not isinstance(body, dict):
                self._send(404 if body is not None else 400, {"error": {"message": "bad request", "type": "invalid_request_error"}})
                return
            with fake._lock:
                fake.in_flight += 1
                fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            self._flying = True
            try:
                if fake.delay_s:
                    fake._stopping.wait(fake.delay_s)
                rf = body.get("response_format")
                if fake.refuses_json_schema and isinstance(rf, dict) and rf.get("type") == "json_schema":
                    self._send(500, _error("1 validation error: ('body', 'response_format', 'type'): Input should be "
                                           "'text' or 'json_object', input: 'json_schema'", "internal_server_error"))
                else:
                    self._chat(fake._next_action(), body)
            finally:
                self._leave_flight()

        def _leave_flight(self) -> None:
            """Count this chat request out of ``in_flight`` (once)."""
            if getattr(self, "_flying", False):
                self._flying = False
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


JSON = "application/json"


def _file_object(f: dict) -> dict:
    return {k: v for k, v in f.items() if k != "content"}


def _parse_multipart(raw: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """``multipart/form-data`` fields: name -> (filename, bytes)."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw)
    fields: dict[str, tuple[str | None, bytes]] = {}
    if msg.is_multipart():
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if isinstance(name, str):
                fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def _validate_batch_input(content: bytes, endpoint: str) -> tuple[list[dict], list[dict]]:
    """(lines, errors) of a batch input file, checked the way the Batch API documents it:
    one JSON object per line with a unique ``custom_id``, ``method: POST``, the batch's
    ``url`` and a ``body`` naming the model."""
    lines: list[dict] = []
    errors: list[dict] = []
    seen: set[str] = set()
    for number, text in enumerate(content.decode("utf-8", errors="replace").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            errors.append({"code": "invalid_json_line", "message": "not JSON", "param": None, "line": number})
            continue
        problem = None
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            problem = "custom_id must be a string"
        elif line["custom_id"] in seen:
            problem = f"duplicate custom_id {line['custom_id']}"
        elif line.get("method") != "POST" or line.get("url") != endpoint:
            problem = f"method must be POST and url {endpoint}"
        elif not isinstance(line.get("body"), dict) or not isinstance(line["body"].get("model"), str):
            problem = "body must be an object with a model"
        if problem:
            errors.append({"code": "invalid_request", "message": problem, "param": None, "line": number})
            continue
        seen.add(line["custom_id"])
        lines.append(line)
    if not lines and not errors:
        errors.append({"code": "empty_file", "message": "the input file has no requests", "param": None, "line": None})
    return lines, errors

"""The teacher through the OpenAI Batch API (``/v1/files`` + ``/v1/batches``).

:class:`BatchTeacherClient` is a :class:`~dataforge.teacher.client.TeacherClient` whose
transport is a batch instead of an HTTP request: it replaces only ``_send`` (one wire request
until a well-formed body arrives, billed). Everything above the transport is the online
client's own: ``complete``, ``complete_structured`` and ``complete_n`` (one batch line per
sample), the cache keys and request records, the length and schema retries, failure counts,
cost. So the generation code, which awaits one ``complete()`` per sample inside an
``asyncio.gather``, runs unchanged, and the two modes share one cache.

A request that misses the cache is queued; once no new request has arrived for
``flush_after_s`` (or ``batch_max_requests`` are queued) the queue becomes one batch:

1. the lines (``custom_id`` = the request's cache key) are written to
   ``<state_dir>/<submission>.input.jsonl``, a local copy of what is asked;
2. the file is uploaded (``purpose="batch"``); ``<state_dir>/<submission>.json`` records
   ``uploaded`` with the file id;
3. the batch is created; the state file records ``submitted`` with the batch id, BEFORE the
   first poll;
4. ``batches.retrieve`` is polled every ``batch_poll_interval_s`` until a terminal status;
5. the output and error files are downloaded and each line's outcome goes to the requests
   waiting for it (the online client's code then judges, caches and returns the answer);
6. the state file records ``collected`` and the input copy is deleted.

Resume after a crash: the state files are read on first use. A request whose key is in a
submission that was uploaded or submitted but never collected waits for THAT batch (it is
polled and collected, not resubmitted). Its lines nobody asks for in this process are cached
too (with a request record rebuilt from the input copy), so a request asked for later still
finds its answer. A submission recorded as ``uploaded`` (the process died around
``batches.create``) first looks for a batch made from its file (``batches.list``) and adopts
it; only if there is none does it create one from the file already uploaded. A retried
``batches.create`` looks the same way first, since a create whose reply was lost may have
succeeded. Submissions whose requests nobody asks for again (another stage, an old config) are
left alone.

Failures: a line answered with 5xx, 408 or 429, an unusable body, no result at all, or the
batch's expiry is asked again in a later batch until the request has been in ``max_attempts``
batches; then (and at once for other 4xx, ``failed`` and ``cancelled`` batches) it raises
:class:`TeacherError` with reason ``batch_error:http_<status>``, ``batch_error:<code>``,
``batch_expired``, ``batch_failed``, ``batch_cancelled``, ``batch_missing_result`` or
``malformed_response``. Calls to the files and batches endpoints are retried like the online
client's requests (5xx, 408, 429, timeouts, connection errors; backoff with jitter,
``Retry-After`` honoured).

Accounting: ``stats.requests_sent`` counts batch lines this client submitted; tokens are billed
for every answer received, at ``teacher.prices`` less ``teacher.batch_discount``.

One client belongs to one event loop. Several clients (the textbooks and CoT stages run at the
same time) may share a ``state_dir``: every submission has its own state file, written atomically.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

import openai
from openai.types import Batch

from dataforge.config import ConfigError, TeacherConfig
from dataforge.store import atomic_write_text
from dataforge.teacher.cache import RequestCache
from dataforge.teacher.client import (
    Completion,
    MalformedResponse,
    Tally,
    TeacherClient,
    TeacherError,
    check_body,
    extract_completion,
    parse_retry_after,
)
from dataforge.teacher.ratelimit import SleepFn
from dataforge.teacher.urls import redact_url

__all__ = ["BatchState", "BatchTeacherClient", "read_batch_states"]

log = logging.getLogger("dataforge.teacher")

ENDPOINT = "/v1/chat/completions"
TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
# OpenAI accepts input files up to 200 MB; stay clear of it.
MAX_BATCH_BYTES = 190 * 1024 * 1024
# How many recent batches to scan for one made from a given input file.
ADOPT_SCAN_LIMIT = 100
_RETRYABLE_4XX = frozenset({408, 429})

T = TypeVar("T")
SubmissionStatus = Literal["new", "uploaded", "submitted", "collected", "abandoned"]


# --------------------------------------------------------------------------- state on disk


@dataclass
class BatchState:
    """One submission as recorded in ``<state_dir>/<submission>.json``.

    ``status``: ``uploaded`` (input file uploaded; the batch may or may not exist),
    ``submitted`` (batch id known), ``collected`` (answers taken) or ``abandoned`` (the provider
    refused it for good; ``error`` says why). ``new`` exists only in memory. ``requests`` maps
    each ``custom_id`` (request key) to its ``sample_index``. Holds no credentials.
    """

    submission: str
    status: SubmissionStatus
    base_url: str  # without user info or query
    model: str
    requests: dict[str, int]
    created_at: str
    input_file_id: str | None = None
    batch_id: str | None = None
    batch_status: str | None = None  # the provider's terminal status, once collected
    succeeded: int | None = None
    failed: int | None = None
    error: str | None = None
    collected_at: str | None = None

    @property
    def resumable(self) -> bool:
        return self.status in ("uploaded", "submitted")


def _state_path(state_dir: Path, submission: str) -> Path:
    return state_dir / f"{submission}.json"


def _input_path(state_dir: Path, submission: str) -> Path:
    return state_dir / f"{submission}.input.jsonl"


def read_batch_states(state_dir: Path | str) -> list[BatchState]:
    """Every readable submission under ``state_dir``, oldest first. An unreadable state file is
    skipped with a warning that names it."""
    states = []
    for path in sorted(Path(state_dir).glob("*.json")):
        try:
            states.append(BatchState(**json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError) as err:
            log.warning("ignoring unreadable batch state file %s: %s", path, err)
    return states


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


# --------------------------------------------------------------------------- in memory


@dataclass
class _Outcome:
    """What a batch said about one line: an answer ``body``, or a failure."""

    body: Any = None
    reason: str | None = None
    retryable: bool = False
    detail: str = ""


@dataclass
class _Pending:
    """One line some callers wait for: queued, or in a batch being made, polled or collected."""

    key: str
    body: dict  # the line's body: model, messages and the wire parameters
    futures: list[asyncio.Future[_Outcome]] = field(default_factory=list)

    def live(self) -> bool:
        return any(not f.done() for f in self.futures)


@dataclass
class _Job:
    """One submission this client makes, or resumes from a state file."""

    state: BatchState
    bodies: dict[str, dict]  # custom_id -> line body (from the local input copy when resumed)
    resumed: bool = False
    task: asyncio.Task[None] | None = None


def _line_outcome(record: Any) -> tuple[str | None, _Outcome]:
    """(custom_id, outcome) of one line of an output or error file."""
    if not isinstance(record, dict):
        return None, _Outcome(reason="malformed_response", retryable=True, detail="line is not an object")
    custom_id = record.get("custom_id") if isinstance(record.get("custom_id"), str) else None
    response, error = record.get("response"), record.get("error")
    if isinstance(response, dict) and isinstance(response.get("status_code"), int):
        status = response["status_code"]
        if status == 200:
            return custom_id, _Outcome(body=response.get("body"))
        body = response.get("body")
        message = body["error"].get("message") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
        return custom_id, _Outcome(reason=f"batch_error:http_{status}",
                                   retryable=status >= 500 or status in _RETRYABLE_4XX, detail=str(message or ""))
    if isinstance(error, dict):
        code = str(error.get("code") or "unknown")
        detail = str(error.get("message") or "")
        if code == "batch_expired":
            return custom_id, _Outcome(reason="batch_expired", retryable=True, detail=detail)
        if code == "batch_cancelled":
            return custom_id, _Outcome(reason="batch_cancelled", detail=detail)
        return custom_id, _Outcome(reason=f"batch_error:{code}", detail=detail)
    return custom_id, _Outcome(reason="malformed_response", retryable=True, detail="line has neither response nor error")


def _missing_outcome(batch: Batch) -> _Outcome:
    """The outcome of a line the batch's files do not mention, by the batch's status."""
    if batch.status == "expired":
        return _Outcome(reason="batch_expired", retryable=True, detail="not executed before the completion window ended")
    if batch.status == "cancelled":
        return _Outcome(reason="batch_cancelled", detail="the batch was cancelled")
    if batch.status == "failed":
        errors = (batch.errors.data if batch.errors else None) or []
        detail = "; ".join(f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "") for e in errors)
        return _Outcome(reason="batch_failed", detail=detail or "the batch failed")
    return _Outcome(reason="batch_missing_result", retryable=True, detail="the completed batch has no result for it")


# --------------------------------------------------------------------------- the client


class BatchTeacherClient(TeacherClient):
    """A :class:`TeacherClient` whose requests travel as OpenAI batches (see the module docstring).

    ``state_dir`` holds one state file (and, until collected, the input JSONL) per submission;
    ``sleep`` is awaited between polls and before retried API calls; ``flush_after_s`` is the
    quiet period after the last request before the queue is sent as a batch.
    """

    def __init__(
        self,
        cfg: TeacherConfig,
        cache: RequestCache,
        *,
        base_url: str | None = None,
        state_dir: Path,
        sleep: SleepFn = asyncio.sleep,
        flush_after_s: float = 0.2,
    ) -> None:
        if cfg.provider == "local":
            raise ConfigError("teacher.mode: batch needs a provider with the Batch API (provider: openai); "
                              "the embedded llama.cpp server has no /v1/batches")
        super().__init__(cfg, cache, base_url=base_url, sleep=sleep)
        self.cache: RequestCache = cache
        # One line per sample: each line's custom_id is its sample's cache key, which is what
        # makes a crashed batch resumable line by line (the API's `n` would pack several).
        self.n_honoured = False
        self.state_dir = Path(state_dir)
        self._flush_after_s = flush_after_s
        self._public_base_url = redact_url(self.base_url)
        self._pending: dict[str, _Pending] = {}
        self._queue: dict[str, None] = {}  # keys waiting for the next batch, in arrival order
        self._inflight: dict[str, _Job] = {}  # key -> the uncollected submission holding it
        self._jobs: list[_Job] = []
        self._flusher: asyncio.Task[None] | None = None
        self._last_arrival = 0.0
        self._states_loaded = False
        self._warned_unpriced_batch: set[str] = set()
        # key -> sample_index of the requests being asked, for the state file (``_send`` only
        # sees the key): a resumed answer nobody asks for is cached with a complete record
        self._sample_indexes: dict[str, int] = {}

    # -- the transport the online client's code runs on

    async def _fresh(self, messages: list[dict], params: dict, key: str, sample_index: int, **kwargs: Any) -> Completion:
        self._sample_indexes[key] = sample_index
        try:
            return await super()._fresh(messages, params, key, sample_index, **kwargs)
        finally:
            self._sample_indexes.pop(key, None)

    async def _send(self, messages: list[dict], wire: dict, key: str, tally: Tally, n: int = 1) -> dict:
        """Batch lines for one wire request until a well-formed completion arrives; bills it
        (at the batch price) and returns the raw body. ``tally.attempts`` counts batches."""
        if n != 1 or "n" in wire:
            raise ValueError("a batch line carries one sample (BatchTeacherClient never asks with n)")
        body = {"model": self.cfg.model, "messages": messages, **wire}
        while True:
            tally.attempts += 1
            outcome = await self._line(key, body)
            if outcome.reason is None:
                try:
                    check_body(outcome.body)
                except MalformedResponse as err:
                    outcome = _Outcome(reason="malformed_response", retryable=True, detail=str(err))
                else:
                    self._bill(outcome.body, tally)
                    return outcome.body
            if not outcome.retryable or tally.attempts >= self.cfg.max_attempts:
                raise self._error(str(outcome.reason), outcome.detail, tally)
            self.stats.retries += 1
            log.warning("teacher request %s failed in a batch (%s), attempt %d/%d; asking in the next batch",
                        key[:16], outcome.reason, tally.attempts, self.cfg.max_attempts)

    def _bill(self, body: dict, tally: Tally) -> None:
        _, _, prompt_tokens, completion_tokens, model = extract_completion(body)
        name = model or self.cfg.model
        if self.cfg.price_for(name) is None and name not in self._warned_unpriced_batch:
            self._warned_unpriced_batch.add(name)
            log.warning("teacher.prices has no entry for model %r: its tokens count as 0 USD", name)
        cost = self.cfg.cost_usd(prompt_tokens, completion_tokens, model=name, batch=True)
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        self.stats.cost_usd += cost
        tally.cost_usd += cost

    async def _line(self, key: str, body: dict) -> _Outcome:
        """The outcome of the line ``key``: riding in the uncollected batch from before that
        holds it, with another caller's identical line, or queued for the next batch."""
        self._load_states()
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(key, body)
            job = self._inflight.get(key)
            if job is not None:  # only a resumed submission holds a key without a pending line
                self._start(job)
            else:
                self._enqueue(key)
        future: asyncio.Future[_Outcome] = asyncio.get_running_loop().create_future()
        pending.futures.append(future)
        return await future

    async def aclose(self) -> None:
        """Stop polling and close the HTTP client. Submitted batches stay recorded as such, so
        the next client on the same ``state_dir`` collects them."""
        tasks = [t for t in [self._flusher, *(j.task for j in self._jobs)] if t is not None and not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for pending in self._pending.values():
            for f in pending.futures:
                f.cancel()
        self._pending.clear()
        self._queue.clear()
        await super().aclose()

    # -- queueing

    def _enqueue(self, key: str) -> None:
        self._queue[key] = None
        self._last_arrival = asyncio.get_running_loop().time()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop(), name="dataforge-batch-flusher")

    async def _flush_loop(self) -> None:
        """Send the queue as batches once it is quiet (or full)."""
        loop = asyncio.get_running_loop()
        while self._queue:
            while len(self._queue) < self.cfg.batch_max_requests:
                idle = loop.time() - self._last_arrival
                if idle >= self._flush_after_s:
                    break
                await asyncio.sleep(self._flush_after_s - idle)
            chunk = self._take_chunk()
            if not chunk:
                continue
            try:
                job = self._new_job(chunk)
            except OSError as err:  # the input copy could not be written: nothing was sent
                log.error("could not write a batch input file under %s: %s", self.state_dir, err)
                for pending, _ in chunk:
                    self._pending.pop(pending.key, None)
                    for f in pending.futures:
                        if not f.done():
                            f.set_exception(err)
                continue
            self._start(job)

    def _take_chunk(self) -> list[tuple[_Pending, str]]:
        """Up to ``batch_max_requests`` queued lines (under ``MAX_BATCH_BYTES``) with their
        JSONL; lines nobody waits for any more are dropped."""
        chunk: list[tuple[_Pending, str]] = []
        size = 0
        for key in list(self._queue):
            pending = self._pending.get(key)
            if pending is None or not pending.live():
                del self._queue[key]
                self._pending.pop(key, None)
                continue
            line = json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": pending.body},
                              ensure_ascii=False) + "\n"
            if chunk and (len(chunk) >= self.cfg.batch_max_requests or size + len(line.encode()) > MAX_BATCH_BYTES):
                break
            del self._queue[key]
            chunk.append((pending, line))
            size += len(line.encode())
        return chunk

    def _new_job(self, chunk: list[tuple[_Pending, str]]) -> _Job:
        # sortable by time (read_batch_states lists oldest first), unique across processes
        submission = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
        requests = {p.key: self._sample_indexes.get(p.key, 0) for p, _ in chunk}
        state = BatchState(submission=submission, status="new", base_url=self._public_base_url, model=self.cfg.model,
                           requests=requests, created_at=_now())
        self.state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(_input_path(self.state_dir, submission), "".join(line for _, line in chunk))
        job = _Job(state=state, bodies={p.key: p.body for p, _ in chunk})
        for pending, _ in chunk:
            self._inflight[pending.key] = job
        return job

    def _start(self, job: _Job) -> None:
        if job.task is None:
            job.task = asyncio.create_task(self._run_job(job), name=f"dataforge-batch-{job.state.submission}")
            self._jobs.append(job)

    # -- resume

    def _load_states(self) -> None:
        """Register every uncollected submission to this endpoint (once per client). Its
        polling starts only when one of its requests is asked for."""
        if self._states_loaded:
            return
        self._states_loaded = True
        for state in read_batch_states(self.state_dir):
            if not state.resumable or state.base_url != self._public_base_url:
                continue
            job = _Job(state=state, bodies=self._read_input_copy(state.submission), resumed=True)
            for key in state.requests:
                self._inflight.setdefault(key, job)
            log.info("found uncollected batch submission %s (%s, %d requests)",
                     state.submission, state.batch_id or "batch not yet created", len(state.requests))

    def _read_input_copy(self, submission: str) -> dict[str, dict]:
        path = _input_path(self.state_dir, submission)
        bodies: dict[str, dict] = {}
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            log.warning("batch submission %s: its input copy %s is missing; answers nobody asks for "
                        "again will not be cached", submission, path)
            return bodies
        for line in lines:
            try:
                record = json.loads(line)
                bodies[record["custom_id"]] = record["body"]
            except (ValueError, KeyError, TypeError):
                log.warning("batch submission %s: skipping an unreadable line of %s", submission, path)
        return bodies

    def _save(self, state: BatchState) -> None:
        atomic_write_text(_state_path(self.state_dir, state.submission),
                          json.dumps(asdict(state), indent=1, sort_keys=True))

    # -- one submission, start to end

    async def _run_job(self, job: _Job) -> None:
        """Upload, create, poll, download and settle one submission. Every line waiting on it
        gets an outcome or an exception, whatever happens, except cancellation (then the state
        file keeps the submission for the next client)."""
        state = job.state
        try:
            if state.status == "new":
                await self._upload(job)
            if state.batch_id is None:
                await self._create(job)
            batch = await self._poll(job)
            outcomes = await self._download(batch)
            self._settle(job, batch, outcomes)
        except TeacherError as err:
            log.warning("batch submission %s: %s", state.submission, err)
            self._finish_lines(job, err)
        except Exception as err:  # a bug or a local I/O error: surface it to every caller
            log.exception("batch submission %s failed unexpectedly", state.submission)
            self._finish_lines(job, err)

    async def _upload(self, job: _Job) -> None:
        state = job.state
        path = _input_path(self.state_dir, state.submission)
        data = path.read_bytes()
        try:
            uploaded = await self._api("file upload", lambda: self._client.files.create(
                file=(path.name, data, "application/jsonl"), purpose="batch"))
        except TeacherError:
            path.unlink(missing_ok=True)  # nothing was submitted: nothing to resume
            raise
        state.input_file_id = uploaded.id
        state.status = "uploaded"
        self._save(state)

    async def _create(self, job: _Job) -> None:
        """Create the batch, or adopt the one an earlier attempt created (a lost reply, or a
        crash before the state file recorded it): a resumed submission looks first, a fresh
        one before each retry."""
        state = job.state
        assert state.input_file_id is not None
        file_id = state.input_file_id
        calls = 0

        async def create_or_adopt() -> Batch:
            nonlocal calls
            calls += 1
            if job.resumed or calls > 1:
                found = await self._find_batch(file_id)
                if found is not None:
                    log.info("batch submission %s: adopting batch %s made from %s", state.submission, found.id, file_id)
                    return found
            return await self._client.batches.create(
                input_file_id=file_id, endpoint=ENDPOINT,
                completion_window=self.cfg.batch_completion_window,  # type: ignore[arg-type]
                metadata={"dataforge_submission": state.submission})

        try:
            batch = await self._api("batch creation", create_or_adopt)
        except TeacherError as err:
            if err.reason in ("http_400", "http_404"):  # the provider will never take this file
                self._abandon(state, err)
            raise
        if not job.resumed:
            self.stats.requests_sent += len(state.requests)
        state.batch_id = batch.id
        state.status = "submitted"
        self._save(state)
        log.info("batch %s submitted: %d requests (submission %s)", batch.id, len(state.requests), state.submission)

    async def _find_batch(self, input_file_id: str) -> Batch | None:
        seen = 0
        async for batch in self._client.batches.list(limit=ADOPT_SCAN_LIMIT):
            if batch.input_file_id == input_file_id:
                return batch
            seen += 1
            if seen >= ADOPT_SCAN_LIMIT:
                break
        return None

    async def _poll(self, job: _Job) -> Batch:
        state = job.state
        assert state.batch_id is not None
        batch_id = state.batch_id
        last = None
        while True:
            try:
                batch = await self._api("batch poll", lambda: self._client.batches.retrieve(batch_id))
            except TeacherError as err:
                if err.reason == "http_404":
                    self._abandon(state, err)
                raise
            if batch.status != last:
                log.info("batch %s: %s", batch_id, batch.status)
                last = batch.status
            if batch.status in TERMINAL_STATUSES:
                return batch
            await self._sleep(self.cfg.batch_poll_interval_s)

    async def _download(self, batch: Batch) -> dict[str, _Outcome]:
        outcomes: dict[str, _Outcome] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self._api("result download", lambda fid=file_id: self._client.files.content(fid))
            for number, line in enumerate(content.text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    custom_id, outcome = _line_outcome(json.loads(line))
                except ValueError:
                    custom_id = None
                if custom_id is None:
                    log.warning("batch %s: file %s line %d is unreadable; skipped", batch.id, file_id, number)
                    continue
                outcomes[custom_id] = outcome
        return outcomes

    # -- settling

    def _settle(self, job: _Job, batch: Batch, outcomes: dict[str, _Outcome]) -> None:
        """Hand every line's outcome to the requests waiting for it (answers nobody waits for
        go to the cache), then record the submission as collected."""
        state = job.state
        missing = _missing_outcome(batch)
        succeeded = 0
        for key in state.requests:
            outcome = outcomes.get(key, missing)
            succeeded += outcome.reason is None
            if self._inflight.get(key) is job:
                del self._inflight[key]
            pending = self._pending.pop(key, None)
            if pending is not None:
                for f in pending.futures:
                    if not f.done():
                        f.set_result(outcome)
            elif outcome.reason is None:
                self._cache_unclaimed(job, key, outcome.body)
        state.status = "collected"
        state.batch_status = batch.status
        state.succeeded, state.failed = succeeded, len(state.requests) - succeeded
        state.collected_at = _now()
        self._save(state)
        _input_path(self.state_dir, state.submission).unlink(missing_ok=True)
        log.info("batch %s %s: %d answers, %d failures", batch.id, batch.status, state.succeeded, state.failed)

    def _cache_unclaimed(self, job: _Job, key: str, body: Any) -> None:
        """Cache an answer of a resumed batch that nobody in this process asked for (yet), as
        the online client would have: only a usable, accepted answer, with its request."""
        line_body = job.bodies.get(key)
        if line_body is None:
            return  # the input copy is gone: nothing to file the answer under
        try:
            _, finish_reason, prompt_tokens, completion_tokens, model = extract_completion(body)
        except MalformedResponse:
            return
        if finish_reason == "length" and self.cfg.retry_on_length:
            return  # the online client would not have accepted it either
        params = {k: v for k, v in line_body.items() if k not in ("model", "messages")}
        request = {"model": line_body.get("model", self.cfg.model), "messages": line_body.get("messages", []),
                   "params": params, "sample_index": job.state.requests[key], "base_url": job.state.base_url,
                   "attempts": 1, "cost_usd": round(self.cfg.cost_usd(prompt_tokens, completion_tokens,
                                                                       model=model, batch=True), 10)}
        self.cache.put(key, request, body)

    def _finish_lines(self, job: _Job, err: BaseException) -> None:
        """The submission failed before any outcome: every line waiting on it raises ``err``
        (a :class:`TeacherError` is reported by the caller's request as its failure)."""
        for key in job.state.requests:
            if self._inflight.get(key) is job:
                del self._inflight[key]
            pending = self._pending.pop(key, None)
            for f in pending.futures if pending else []:
                if not f.done():
                    f.set_exception(err)

    def _abandon(self, state: BatchState, err: TeacherError) -> None:
        state.status = "abandoned"
        state.error = f"{err.reason}: {err}"
        self._save(state)
        _input_path(self.state_dir, state.submission).unlink(missing_ok=True)

    # -- files and batches API calls

    async def _api(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """One files/batches API call, retried like the online client's requests."""
        max_attempts = self.cfg.max_attempts
        for attempt in range(1, max_attempts + 1):
            retry_after: float | None = None
            try:
                return await call()
            except openai.APIStatusError as err:
                status = err.status_code
                reason, detail = f"http_{status}", err.message
                if status < 500 and status not in _RETRYABLE_4XX:
                    raise TeacherError(reason, self._redact(
                        f"batch {what} failed after {attempt} attempt(s): {reason}, not retryable ({detail})"),
                        attempt) from None
                retry_after = parse_retry_after(err.response.headers)
            except openai.APITimeoutError:
                reason, detail = "timeout", f"no answer within {self.cfg.timeout_s}s"
            except openai.APIConnectionError as err:
                reason, detail = "connection", err.message
            if attempt >= max_attempts:
                raise TeacherError(reason, self._redact(
                    f"batch {what} failed after {attempt} attempt(s): {reason} ({detail})"), attempt)
            delay = self._backoff(attempt - 1, retry_after)
            self.stats.retries += 1
            log.warning("batch %s failed (%s), attempt %d/%d; retrying in %.2fs", what, reason, attempt, max_attempts,
                        delay)
            await self._sleep(delay)
        raise AssertionError("unreachable")  # the loop always returns or raises

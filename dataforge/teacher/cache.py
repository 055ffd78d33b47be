"""Persistent teacher request cache: one SQLite file keyed by a hash of the request.

Every answered request is written (and committed) as soon as its answer arrives, so a run
that is killed and restarted re-sends only the requests that were never answered. The file
is shared safely by several processes (WAL mode, busy timeout) and by asyncio code in one
process (short synchronous calls serialised by a ``threading.Lock``).

The stored request is for provenance and debugging only; it never holds an API key.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["request_key", "RequestCache", "CacheEntry"]

# Top-level request fields that could carry credentials; dropped defensively by ``put``.
_SECRET_FIELDS = frozenset({"api_key", "authorization", "headers", "default_headers"})


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(model: str, messages: list[dict], params: dict, sample_index: int) -> str:
    """sha256 hex of the canonical JSON of the request.

    Parameters whose value is None are dropped first, so ``top_p=None`` and "no top_p" hash
    alike. Key order never matters (``sort_keys``); ``sample_index`` distinguishes several
    samples drawn for the same prompt and parameters.
    """
    clean = {k: v for k, v in params.items() if v is not None}
    payload = {"model": model, "messages": messages, "params": clean, "sample_index": sample_index}
    return hashlib.sha256(_canonical_json(payload).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """One cached answer: the stored request (provenance), the response body and when it
    was stored."""

    key: str
    request: dict
    response: dict
    created_at: str


_INIT_LOCK = threading.Lock()  # one initialization at a time within a process


class RequestCache:
    """Request-hash -> raw response body, persisted in one SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: autocommit, every statement is its own committed transaction.
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None
        )
        with _INIT_LOCK, self._lock:
            self._initialize(self._conn)

    @staticmethod
    def _initialize(conn: sqlite3.Connection, attempts: int = 50) -> None:
        """Set WAL mode and create the table. Switching the journal mode of a new file can
        fail at once with "database is locked" while another process or connection opens it
        too (SQLite's busy handler does not cover that step), so retry for a few seconds."""
        for attempt in range(attempts):
            try:
                conn.execute("PRAGMA busy_timeout=30000")
                conn.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode survives a killed process (only power loss can lose the
                # last commits), at a fraction of the cost of FULL.
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS requests ("
                    " key TEXT PRIMARY KEY,"
                    " request TEXT NOT NULL,"
                    " response TEXT NOT NULL,"
                    " created_at TEXT NOT NULL)"
                )
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or attempt == attempts - 1:
                    raise
                time.sleep(0.1 + random.random() * 0.1)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"request cache {self.path} is closed")
        return self._conn

    def _fetch(self, column: str, key: str) -> dict | None:
        with self._lock:
            row = self._connection().execute(f"SELECT {column} FROM requests WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def get(self, key: str) -> dict | None:
        """The cached raw response body for ``key``, or None."""
        return self._fetch("response", key)

    def get_request(self, key: str) -> dict | None:
        """The stored request (model, messages, params, sample_index, base_url), or None."""
        return self._fetch("request", key)

    def get_entry(self, key: str) -> CacheEntry | None:
        """Request, response and time of ``key`` in one read, or None."""
        with self._lock:
            row = self._connection().execute(
                "SELECT request, response, created_at FROM requests WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        return CacheEntry(key=key, request=json.loads(row[0]), response=json.loads(row[1]), created_at=row[2])

    def keys_with_prefix(self, prefix: str, limit: int = 10) -> list[str]:
        """Up to ``limit`` keys starting with ``prefix`` (a hex hash prefix), sorted."""
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            return []
        # keys are hex, so a range scan on the primary key needs no LIKE escaping
        with self._lock:
            rows = self._connection().execute(
                "SELECT key FROM requests WHERE key >= ? AND key < ? ORDER BY key LIMIT ?",
                (prefix, prefix + "g", limit),
            ).fetchall()
        return [r[0] for r in rows]

    def put(self, key: str, request: dict, response: dict) -> None:
        """Store (or replace) one answer; committed before returning."""
        request = {k: v for k, v in request.items() if k.lower() not in _SECRET_FIELDS}
        created = datetime.now(timezone.utc).isoformat()
        with self._lock:
            self._connection().execute(
                "INSERT OR REPLACE INTO requests (key, request, response, created_at) VALUES (?, ?, ?, ?)",
                (key, json.dumps(request, ensure_ascii=False, sort_keys=True), json.dumps(response, ensure_ascii=False), created),
            )

    def __len__(self) -> int:
        with self._lock:
            (n,) = self._connection().execute("SELECT COUNT(*) FROM requests").fetchone()
        return int(n)

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "RequestCache":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RequestCache({str(self.path)!r})"

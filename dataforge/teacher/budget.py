"""``teacher.budget_usd``: stop a run before a request could take its teacher spend past a budget.

Why a ledger shared by the whole run: the generation stages run side by side (each a thread with
its own :class:`~dataforge.teacher.client.TeacherClient` and event loop) and the judge asks the
teacher later, so the spend that counts is the run's, not one client's. One :class:`SpendLedger`
per run attempt (:func:`open_ledger`, keyed by the run's folder) is shared by every client of the
run in this process; it starts from what earlier attempts of the run spent (``run.json``'s
``teacher.spent_usd``), so a resumed run keeps counting.

The check is conservative: a request is sent only when ``spent + held + worst <= budget``, where
``held`` is the worst case of the requests already in flight and ``worst`` this request's (its
prompt at ``WORST_CHARS_PER_TOKEN`` characters a token plus ``max_tokens`` per choice, at the
configured prices). When its answer arrives the hold becomes the billed cost. So concurrent
requests can never take the run past its budget together. Cache hits never reach the ledger.
A refused request raises :class:`BudgetExceeded` (not a ``TeacherError``: it is no failed
sample, it stops the stage); the runner turns it into a clean ``stopped: budget``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from dataforge.config import TeacherConfig
from dataforge.errors import DataforgeError

__all__ = [
    "BudgetExceeded",
    "SpendLedger",
    "close_ledger",
    "current_ledger",
    "ledger_for",
    "open_ledger",
    "prior_spend",
    "use_ledger",
    "worst_case_prompt_tokens",
]

log = logging.getLogger("dataforge.teacher")

# A bound on tokens per character for the worst case: BPE tokenizers give English about one token
# per 4 characters; 2.5 leaves room for code, numbers and other languages (the billed cost then
# replaces the hold, so a generous bound only makes the stop a little early, never late).
WORST_CHARS_PER_TOKEN = 2.5
# chat-template tokens around each message (role markers, separators) and the reply's header
PER_MESSAGE_TOKENS = 8


class BudgetExceeded(DataforgeError, RuntimeError):
    """The next teacher request could take the run past ``teacher.budget_usd``: nothing was sent."""

    def __init__(self, budget_usd: float, spent_usd: float, needed_usd: float) -> None:
        self.budget_usd = budget_usd
        self.spent_usd = spent_usd
        self.needed_usd = needed_usd
        super().__init__(f"teacher budget reached: spent ${spent_usd:.6f} of ${budget_usd:.6f}; the next request "
                         f"could cost up to ${needed_usd:.6f}")


def worst_case_prompt_tokens(messages: list[dict]) -> int:
    """An upper estimate of a chat prompt's tokens, without a tokenizer (see the module docstring)."""
    chars = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    return math.ceil(chars / WORST_CHARS_PER_TOKEN) + PER_MESSAGE_TOKENS * (len(messages) + 1)


@dataclass
class _Hold:
    usd: float


class SpendLedger:
    """The run's teacher spend against its budget; thread-safe (one lock, short sections)."""

    def __init__(self, budget_usd: float | None, prior_usd: float = 0.0) -> None:
        self.budget_usd = budget_usd
        self.prior_usd = float(prior_usd)  # what earlier attempts of the run spent
        self.spent_usd = 0.0  # billed in this attempt
        self.held_usd = 0.0  # worst cases of the requests in flight
        self.requests = 0  # requests let through
        self.refused = 0
        self.stopped: BudgetExceeded | None = None  # the first refusal; later requests are refused too
        self._lock = threading.Lock()

    @property
    def total_usd(self) -> float:
        """Spent by the run so far, earlier attempts included."""
        with self._lock:
            return self.prior_usd + self.spent_usd

    def hold(self, worst_usd: float) -> _Hold:
        """Reserve ``worst_usd`` for a request about to be sent, or raise :class:`BudgetExceeded`.
        Once one request is refused every later one is too, so a stage stops rather than
        squeezing small requests in after a big one was refused."""
        with self._lock:
            spent = self.prior_usd + self.spent_usd
            if self.budget_usd is not None and (
                    self.stopped is not None or spent + self.held_usd + worst_usd > self.budget_usd + 1e-12):
                self.refused += 1
                if self.stopped is None:
                    self.stopped = BudgetExceeded(self.budget_usd, spent, worst_usd)
                raise BudgetExceeded(self.budget_usd, spent, worst_usd)
            self.held_usd += worst_usd
            self.requests += 1
            return _Hold(worst_usd)

    def settle(self, hold: _Hold, billed_usd: float) -> None:
        """Replace a hold by what the request was billed (0 when no answer came back)."""
        with self._lock:
            self.held_usd = max(0.0, self.held_usd - hold.usd)
            self.spent_usd += billed_usd

    def record(self) -> dict:
        """What ``run.json``'s ``teacher`` section keeps about the budget."""
        with self._lock:
            out: dict = {"spent_usd": round(self.prior_usd + self.spent_usd, 8), "budget_usd": self.budget_usd}
            if self.stopped is not None:
                out["stopped"] = "budget"
            return out


def prior_spend(record_teacher: dict | None, stages: dict | None = None) -> float:
    """What earlier attempts of a run spent: ``teacher.spent_usd`` of its record (kept across
    attempts), else the sum of its stages' teacher cost (a run recorded before budgets existed)."""
    if record_teacher and isinstance(record_teacher.get("spent_usd"), (int, float)):
        return float(record_teacher["spent_usd"])
    total = 0.0
    for st in (stages or {}).values():
        teacher = getattr(st, "teacher", None) or {}
        cost = teacher.get("cost_usd") if isinstance(teacher, dict) else None
        if isinstance(cost, (int, float)):
            total += float(cost)
    return total


# --------------------------------------------------------------------------- one ledger per run

_LEDGERS: dict[str, SpendLedger] = {}
_LEDGERS_LOCK = threading.Lock()
_CURRENT: contextvars.ContextVar[SpendLedger | None] = contextvars.ContextVar("dataforge_ledger", default=None)


def _key(run) -> str:
    return str(run.dir)


def open_ledger(run, teacher: TeacherConfig) -> SpendLedger | None:
    """A fresh ledger for this attempt of ``run`` (replacing any earlier one in this process),
    starting from what the run's record says earlier attempts spent; None without a budget."""
    close_ledger(run)
    if teacher.budget_usd is None:
        return None
    rec = run.load_record() if run.exists() else None
    prior = prior_spend(rec.teacher if rec else None, rec.stages if rec else None)
    ledger = SpendLedger(teacher.budget_usd, prior)
    if teacher.budget_usd is not None and teacher.price_for() is None:
        log.info("teacher model %r has no price (0 USD a token): teacher.budget_usd never stops it", teacher.model)
    with _LEDGERS_LOCK:
        _LEDGERS[_key(run)] = ledger
    return ledger


def ledger_for(run, teacher: TeacherConfig) -> SpendLedger | None:
    """The run's ledger in this process (opened on first use); None without a budget."""
    if teacher.budget_usd is None:
        return None
    with _LEDGERS_LOCK:
        found = _LEDGERS.get(_key(run))
    if found is not None and found.budget_usd == teacher.budget_usd:
        return found
    return open_ledger(run, teacher)


def peek_ledger(run) -> SpendLedger | None:
    with _LEDGERS_LOCK:
        return _LEDGERS.get(_key(run))


def close_ledger(run) -> None:
    with _LEDGERS_LOCK:
        _LEDGERS.pop(_key(run), None)


def current_ledger() -> SpendLedger | None:
    """The ledger a client made in this context uses when none is passed (see :func:`use_ledger`)."""
    return _CURRENT.get()


@contextlib.contextmanager
def use_ledger(ledger: SpendLedger | None) -> Iterator[None]:
    """Clients created inside the block count their spend in ``ledger`` (the judge's client is
    made deep inside its stage function, which knows nothing of runs)."""
    token = _CURRENT.set(ledger)
    try:
        yield
    finally:
        _CURRENT.reset(token)

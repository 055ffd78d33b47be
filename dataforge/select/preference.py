"""Preference pairs (prompt, chosen, rejected) for DPO, from what a run already decided.

Two sources, each grouping responses that answer the same prompt:

* **verification** (``kind: cot``): the samples of one seed question and method (``seed_id``,
  ``method``). A *verified* sample (``answer_correct`` true, no wrong step, kept to the run's
  final stage) is preferred over a *failed* one (a gold answer it missed, no final answer, a
  program that failed, a wrong or unsupported step: the cot stage's verification drop reasons,
  or ``answer_correct`` false in a ``keep: all`` run). Failed samples live in the cot stage's
  rejected rows; the builder reads them from there.
* **judge** (``kind`` in ``judge_kinds``, textbooks and instructions by default): responses with
  the same prompt turns (a textbook's prompt is a function of its plan cell, an instruction's is
  the instruction), scored by the judge stage. The best-scored response the run kept is
  preferred over one scored at least ``judge_margin`` lower (UltraFeedback's binarisation).

``one`` (the default) emits one pair per question or prompt, the hardest: for verification the
verified/failed pair whose responses are most alike (Jaccard similarity of their word bigrams),
for the judge the lower-scored response closest in score to the best that still clears the
margin (ties: the most alike). ``all`` emits every verified x failed pair, or the best against
every response that clears the margin. Pure functions on rows (dicts); the export layout
(:mod:`dataforge.export_preference`) streams the run into them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from itertools import pairwise
from typing import Any

from dataforge.records import render_messages

#: the cot stage's drop reasons (their part before ``:``) that mean a sample failed verification;
#: ``teacher_error`` (no reply) and ``weak_agreement`` (no gold answer) are not failures to learn from
VERIFICATION_FAILURES = ("answer_mismatch", "no_final_answer", "truncated_no_final_answer", "program_failed",
                         "wrong_step", "no_calculation", "unsupported_answer", "unsupported_quantity")

#: the columns a candidate is built from (any that a table lacks are read as null)
CANDIDATE_COLUMNS = ("id", "kind", "text", "messages", "seed_id", "method", "sample_index", "question",
                     "gold_answer", "answer", "answer_correct", "step_errors", "drop_stage", "drop_reason",
                     "judge_score", "teacher_model")

SOURCES = ("verification", "judge")


@dataclass
class PairOptions:
    """How pairs are made (the ``export.preference`` config section, without pydantic)."""

    sources: Sequence[str] = SOURCES
    cot_pairs: str = "one"  # one | all
    judge_pairs: str = "one"  # one | all
    judge_margin: float = 1.0
    judge_kinds: Sequence[str] = ("textbook", "instruction")

    @classmethod
    def of(cls, cfg: Any) -> PairOptions:
        """From an :class:`~dataforge.config.PreferenceConfig` (or None: the defaults)."""
        if cfg is None:
            return cls()
        if isinstance(cfg, PairOptions):
            return cfg
        return cls(sources=tuple(cfg.sources), cot_pairs=cfg.cot_pairs, judge_pairs=cfg.judge_pairs,
                   judge_margin=float(cfg.judge_margin), judge_kinds=tuple(cfg.judge_kinds))


@dataclass
class PairCounts:
    """What the export reports: per source, the groups, those with pairs, why the others have none."""

    questions: int = 0  # verification: seed questions (per method) with a verified or failed sample
    questions_with_pairs: int = 0
    questions_without_verified: int = 0  # no verified sample kept to the final stage
    questions_without_failed: int = 0
    verification_pairs: int = 0
    prompts: int = 0  # judge: prompts with at least one scored response
    prompts_with_pairs: int = 0
    prompts_single_response: int = 0
    prompts_below_margin: int = 0  # two or more responses, none judge_margin below the best
    prompts_without_kept: int = 0  # the run kept none of its scored responses
    judge_pairs: int = 0
    no_prompt: int = 0  # candidate rows with no turn before their answer (cannot be paired)

    def add(self, other: PairCounts) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Candidate:
    """One response that may go into a pair: its group, prompt, response and label."""

    id: str
    kind: str
    source: str  # verification | judge
    group: str
    prompt: list[dict[str, str]]
    response: str
    in_final: bool  # kept to the run's final stage (only such a response may be chosen)
    sample_index: int = 0
    status: str | None = None  # verification: verified | failed
    reason: str | None = None  # verification: why it failed
    score: float | None = None  # judge score
    seed_id: str | None = None
    question: str | None = None
    gold_answer: str | None = None
    answer: str | None = None
    teacher_model: str | None = None

    def to_json(self) -> str:
        return json.dumps({f: getattr(self, f) for f in _CANDIDATE_FIELDS}, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Candidate:
        return cls(**json.loads(line))


_CANDIDATE_FIELDS = tuple(f.name for f in fields(Candidate))


# --- labels --------------------------------------------------------------------------------

def verification_status(row: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(``verified`` | ``failed`` | None, the failure's reason) of a CoT row. None: no gold
    answer, or dropped for a reason that is not a failed verification (a teacher error)."""
    if row.get("kind") != "cot" or row.get("gold_answer") is None:
        return None, None
    reason = row.get("drop_reason")
    if reason:
        return ("failed", reason) if str(reason).split(":", 1)[0] in VERIFICATION_FAILURES else (None, None)
    if row.get("answer") is None:
        return "failed", "no_final_answer"
    if not row.get("answer_correct"):
        return "failed", "answer_mismatch"
    if row.get("step_errors"):
        return "failed", "wrong_step"
    return "verified", None


def prompt_and_response(row: Mapping[str, Any]) -> tuple[list[dict[str, str]], str] | None:
    """(the turns before the last assistant turn, that turn's content); None without a prompt."""
    if not row.get("text") and not row.get("messages"):
        return None
    msgs = render_messages(dict(row))
    last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=None)
    if not last:  # None, or a lone assistant turn
        return None
    return [{"role": m["role"], "content": m["content"]} for m in msgs[:last]], msgs[last]["content"]


def prompt_key(prompt: Sequence[Mapping[str, str]]) -> str:
    """A stable key of prompt turns (the judge source's group)."""
    data = json.dumps([[m["role"], m["content"]] for m in prompt], ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def candidates_of(row: Mapping[str, Any], in_final: bool, opts: PairOptions) -> tuple[list[Candidate], bool]:
    """The candidates one row gives (none, or one per source it belongs to), and whether it
    was a row of a source that had no prompt."""
    kind = row.get("kind")
    wants_cot = "verification" in opts.sources and kind == "cot"
    wants_judge = "judge" in opts.sources and kind in opts.judge_kinds and row.get("judge_score") is not None
    status, reason = verification_status(row) if wants_cot else (None, None)
    if status is None and not wants_judge:
        return [], False
    pr = prompt_and_response(row)
    if pr is None:
        return [], True
    prompt, response = pr
    common = {"id": row["id"], "kind": kind, "prompt": prompt, "response": response, "in_final": in_final,
              "sample_index": int(row.get("sample_index") or 0), "seed_id": row.get("seed_id"),
              "question": row.get("question"), "gold_answer": row.get("gold_answer"), "answer": row.get("answer"),
              "teacher_model": row.get("teacher_model")}
    out = []
    if status is not None:
        group = f"cot:{row.get('seed_id')}:{row.get('method') or 'cot'}"
        out.append(Candidate(source="verification", group=group, status=status, reason=reason, **common))
    if wants_judge:
        out.append(Candidate(source="judge", group=f"{kind}:{prompt_key(prompt)}",
                             score=float(row["judge_score"]), **common))
    return out, False


# --- similarity ----------------------------------------------------------------------------

def word_bigrams(text: str) -> frozenset:
    """The lower-cased word bigrams of ``text`` (its words, when it has only one)."""
    words = text.lower().split()
    return frozenset(pairwise(words)) if len(words) > 1 else frozenset(words)


def jaccard(x: frozenset, y: frozenset) -> float:
    if not x and not y:
        return 1.0
    return len(x & y) / len(x | y)


def similarity(a: Candidate, b: Candidate) -> float:
    """Jaccard similarity of the two responses' word bigrams, in [0, 1]."""
    return jaccard(word_bigrams(a.response), word_bigrams(b.response))


class _Shingles(dict):
    """The word bigrams of one group's responses, computed once each while the group is paired
    (not kept on the candidates: a partition's worth of bigram sets would dwarf its text)."""

    def sim(self, a: Candidate, b: Candidate) -> float:
        for c in (a, b):
            if c.id not in self:
                self[c.id] = word_bigrams(c.response)
        return jaccard(self[a.id], self[b.id])


# --- pairs ---------------------------------------------------------------------------------

def pair_prompt(chosen: Candidate, rejected: Candidate) -> list[dict[str, str]] | None:
    """The pair's prompt: the chosen's prompt turns when the rejected had the same, else their
    user turns when those agree (two samples of a question under different system prompts);
    None when even those differ."""
    if chosen.prompt == rejected.prompt:
        return chosen.prompt
    users = [m for m in chosen.prompt if m["role"] != "system"]
    return users if users == [m for m in rejected.prompt if m["role"] != "system"] and users else None


def _take(ranked: Iterable[tuple[Candidate, Candidate, float]], mode: str) -> list[dict]:
    """The pairs of ``(chosen, rejected, similarity)`` in their order, those without a shared
    prompt skipped: the first only with ``mode == "one"``, else all."""
    out = []
    for chosen, rejected, sim in ranked:
        p = _pair(chosen, rejected, sim)
        if p is not None:
            out.append(p)
            if mode == "one":
                break
    return out


def _pair(chosen: Candidate, rejected: Candidate, sim: float) -> dict | None:
    prompt = pair_prompt(chosen, rejected)
    if prompt is None:
        return None
    pair_id = hashlib.sha256(f"{chosen.id}:{rejected.id}".encode()).hexdigest()[:32]
    margin = (chosen.score - rejected.score) if chosen.score is not None and rejected.score is not None else None
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen.response}],
            "rejected": [{"role": "assistant", "content": rejected.response}],
            "id": pair_id, "kind": chosen.kind, "source": chosen.source, "group_id": chosen.group,
            "seed_id": chosen.seed_id, "question": chosen.question, "gold_answer": chosen.gold_answer,
            "chosen_id": chosen.id, "rejected_id": rejected.id,
            "chosen_answer": chosen.answer, "rejected_answer": rejected.answer,
            "chosen_verified": True if chosen.source == "verification" else None,
            "rejected_verified": False if rejected.source == "verification" else None,
            "rejected_reason": rejected.reason,
            "chosen_score": chosen.score, "rejected_score": rejected.score, "margin": margin,
            "similarity": round(sim, 6), "teacher_model": chosen.teacher_model}


def verification_pairs(group: Sequence[Candidate], mode: str, counts: PairCounts) -> list[dict]:
    """Pairs of one question's samples: verified (kept to the final stage) over failed.
    ``one``: the most alike verified/failed pair (the hardest negative); ``all``: every pair,
    most alike first. Ties: lower sample indexes, then ids."""
    counts.questions += 1
    verified = sorted((c for c in group if c.status == "verified" and c.in_final), key=lambda c: (c.sample_index, c.id))
    failed = sorted((c for c in group if c.status == "failed"), key=lambda c: (c.sample_index, c.id))
    if not verified:
        counts.questions_without_verified += 1
    if not failed:
        counts.questions_without_failed += 1
    if not verified or not failed:
        return []
    sh = _Shingles()
    combos = sorted(((sh.sim(v, f), v, f) for v in verified for f in failed),
                    key=lambda t: (-t[0], t[1].sample_index, t[2].sample_index, t[1].id, t[2].id))
    out = _take(((v, f, sim) for sim, v, f in combos), mode)
    if out:
        counts.questions_with_pairs += 1
        counts.verification_pairs += len(out)
    return out


def judge_pairs(group: Sequence[Candidate], mode: str, margin: float, counts: PairCounts) -> list[dict]:
    """Pairs of one prompt's scored responses: the best-scored one the run kept (ties: the
    lowest id) over each response scored at least ``margin`` lower. ``one``: the hardest of
    those (the highest score, then the most alike); ``all``: every one, in that order."""
    scored = [c for c in group if c.score is not None]
    if not scored:
        return []
    counts.prompts += 1
    if len(scored) == 1:
        counts.prompts_single_response += 1
        return []
    kept = [c for c in scored if c.in_final]
    if not kept:
        counts.prompts_without_kept += 1
        return []
    best = min(kept, key=lambda c: (-c.score, c.id))
    sh = _Shingles()
    lower = [(sh.sim(best, c), c) for c in scored if c.id != best.id and best.score - c.score >= margin - 1e-9]
    if not lower:
        counts.prompts_below_margin += 1
        return []
    lower.sort(key=lambda t: (-t[1].score, -t[0], t[1].id))
    out = _take(((best, c, sim) for sim, c in lower), mode)
    if out:
        counts.prompts_with_pairs += 1
        counts.judge_pairs += len(out)
    return out


def merge_duplicates(cands: Iterable[Candidate]) -> list[Candidate]:
    """One candidate per (group, id): the same row read from two places (a stage's kept rows
    and the final stage's) is kept to the final stage if either copy was."""
    seen: dict[tuple[str, str], Candidate] = {}
    for c in cands:
        key = (c.group, c.id)
        if key in seen:
            seen[key].in_final = seen[key].in_final or c.in_final
        else:
            seen[key] = c
    return list(seen.values())


def pairs_of_group(group: Sequence[Candidate], opts: PairOptions, counts: PairCounts) -> list[dict]:
    """The pairs of one group (all of its candidates share a source and a group key)."""
    if not group:
        return []
    if group[0].source == "verification":
        return verification_pairs(group, opts.cot_pairs, counts)
    return judge_pairs(group, opts.judge_pairs, opts.judge_margin, counts)


def group_candidates(cands: Iterable[Candidate]) -> list[list[Candidate]]:
    """Candidates merged (:func:`merge_duplicates`) and grouped, groups in key order."""
    groups: dict[str, list[Candidate]] = {}
    for c in merge_duplicates(cands):
        groups.setdefault(c.group, []).append(c)
    return [groups[k] for k in sorted(groups)]


def build_pairs(kept: Iterable[Mapping[str, Any]], rejected: Iterable[Mapping[str, Any]] = (),
                opts: PairOptions | None = None) -> tuple[list[dict], PairCounts]:
    """All pairs of rows in memory: ``kept`` are the final stage's kept rows, ``rejected``
    rows the run did not keep to the end (the cot stage's rejected rows, the judge's ...).
    For tests and small tables; the export streams (:mod:`dataforge.export_preference`)."""
    opts = opts or PairOptions()
    counts = PairCounts()
    cands: list[Candidate] = []
    for rows, in_final in ((kept, True), (rejected, False)):
        for r in rows:
            got, no_prompt = candidates_of(r, in_final, opts)
            counts.no_prompt += no_prompt
            cands += got
    pairs = []
    for g in group_candidates(cands):
        pairs += pairs_of_group(g, opts, counts)
    return pairs, counts

"""AlpaGasus judge (Chen et al. 2023, "AlpaGasus: Training a Better Alpaca with Fewer Data",
arXiv:2307.08701): a teacher rates every sample 0-5 for the *accuracy* (or, in the paper's
variant, the *helpfulness*) of its response, and only the samples rated >= 4.5 are kept
(9,229 of Alpaca's 52k with ChatGPT as the judge).

The prompts are the ones of the AlpaGasus repository (``rating/chatgpt_rating.py``, both
rubrics; the odd ``###Instruction`` heading and "an score" are theirs). The reply is a score
line then an explanation. Where the endpoint supports structured output the reply is also
constrained to ``{score, explanation}`` (:class:`JudgeVerdict`); otherwise (``output: text``,
or ``auto`` after the endpoint failed the schema) the free text is read by
:func:`parse_judge_reply`, which accepts what the AlpaGasus scripts' ``parse_score`` did (a
first line that is a number, ``score:``/``Score:`` anywhere) and the other shapes judges write
(``4.5/5``, ``4 out of 5``, ``Assistant 1: 4``, ``a score of 4``, JSON, markdown bold, the first
number of the first line). A reply with no score is a *failed* judgement with its reason, never
a silent drop; ``on_failure`` says whether it is kept or dropped (``judge:unparseable``).

Scoring and the cut are separate (dolma's attributes): :func:`score_table` adds
``judge_score`` (float, null when not judged), ``judge_reason`` (the judge's explanation, or
why it failed), ``judge_rubric`` and ``judge_error`` (null when judged); :func:`cut_judged`
keeps ``judge_score >= threshold`` — inclusive, exactly as AlpaGasus' ``filter.py`` — and gives
the rest ``drop_reason`` ``judge:score_4.0<4.5``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from dataforge.config import JudgeConfig, PipelineConfig, TeacherConfig
from dataforge.progress import progress_bar
from dataforge.records import with_drop
from dataforge.teacher import RequestCache, TeacherClient
from dataforge.teacher.client import TeacherError

STAGE = "judge"
Rubric = Literal["accuracy", "helpfulness"]

# rating/chatgpt_rating.py of github.com/gpt4life/alpagasus, verbatim
SYSTEM_PROMPT = ("We would like to request your feedback on the performance of AI assistant in response to the "
                 "instruction and the given input displayed following.")
RUBRICS: dict[str, str] = {
    "accuracy": (
        "Please rate according to the accuracy of the response to the instruction and the input. Each assistant "
        "receives a score on a scale of 0 to 5, where a higher score indicates higher level of the accuracy. Please "
        "first output a single line containing value indicating the scores. In the subsequent line, please provide "
        "a comprehensive explanation of your evaluation, avoiding any potential bias. \n\n"),
    "helpfulness": (
        "Please rate according to the helpfulness of the response to the instruction and the input. Each assistant "
        "receives an score on a scale of 0 to 5, where a higher score indicates higher level of the helpfulness. "
        "Please first output a single line containing value indicating the scores. In the subsequent line, please "
        "provide a comprehensive explanation of your evaluation, avoiding any potential bias. \n\n"),
}
TRIPLET = "###Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}\n\n"
# added to the user prompt only when the reply is constrained to JudgeVerdict
STRUCTURED_HINT = "Reply as a JSON object with the score in \"score\" and the explanation in \"explanation\"."
NO_INSTRUCTION = "(none: judge the text below on its own)"

SCORE_MIN, SCORE_MAX = 0.0, 5.0
JUDGE_COLUMNS = ("judge_score", "judge_reason", "judge_rubric", "judge_error")


class JudgeVerdict(BaseModel):
    """The structured reply: closed and all fields required (OpenAI's strict mode)."""

    model_config = ConfigDict(extra="forbid")
    score: float = Field(ge=SCORE_MIN, le=SCORE_MAX)
    explanation: str


# --------------------------------------------------------------------------- the sample


@dataclass(frozen=True)
class Triplet:
    instruction: str
    input: str
    output: str


def _s(v) -> str:
    return v if isinstance(v, str) else ""


def render_row(row: dict) -> Triplet:
    """Instruction, input and response of one row: Alpaca columns (``instruction``, ``input``,
    ``output``/``response``), else the conversation in ``messages`` (the last user turn before
    the last assistant turn; a system message is the input), else a CoT ``question`` and its
    ``rationale``, else the ``text`` judged on its own."""
    if _s(row.get("instruction")).strip():
        out = _s(row.get("output")) or _s(row.get("response"))
        return Triplet(row["instruction"], _s(row.get("input")), out or _s(row.get("text")))
    msgs = row.get("messages") or []
    if msgs:
        last_a = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=None)
        users = [m for m in msgs[: last_a if last_a is not None else len(msgs)] if m.get("role") == "user"]
        if last_a is not None and users:
            system = "\n".join(_s(m.get("content")) for m in msgs if m.get("role") == "system")
            return Triplet(_s(users[-1].get("content")), system, _s(msgs[last_a].get("content")))
    if _s(row.get("question")).strip() and _s(row.get("rationale")).strip():
        return Triplet(row["question"], "", row["rationale"])
    return Triplet(NO_INSTRUCTION, "", _s(row.get("text")))


def judge_messages(t: Triplet, rubric: Rubric, structured: bool = False) -> list[dict]:
    """The AlpaGasus chat: its system prompt, then the triplet followed by the rubric."""
    user = TRIPLET.format(instruction=t.instruction, input=t.input, output=t.output) + RUBRICS[rubric]
    if structured:
        user += STRUCTURED_HINT
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


# --------------------------------------------------------------------------- free-text replies


@dataclass(frozen=True)
class ParsedReply:
    score: float | None
    explanation: str
    how: str  # which pattern found the score, or why none was found

    @property
    def ok(self) -> bool:
        return self.score is not None


_NUM = r"(\d+(?:\.\d+)?|\.\d+)"
_OUT_OF_5 = r"(?:\s*(?:/|out\s+of)\s*5(?:\.0+)?)"
_DECOR = "*_`#>\"' \t"
# a first line that is nothing but the score (AlpaGasus' ``float(review.split('\n')[0])``)
_ALONE = re.compile(rf"(?:(?:score|rating)\s*[:=]?\s*)?{_NUM}{_OUT_OF_5}?\s*[.!]?", re.I)
# "Assistant 1: 4", "Assistant: 4.5" (FastChat/Vicuna review format)
_ASSISTANT = re.compile(rf"\bassistant(?:\s*\d+)?\s*(?:[:=]|-\s)\s*\**\s*{_NUM}", re.I)
# "Score: 4.5", "score: 4", "**Rating:** 4/5", "a score of 4", "I would rate it 4.5", "rated 4 out of 5"
_LABELLED = re.compile(rf"\b(?:score|rating|rate|rated|grade)\b[^\d\n]{{0,24}}?{_NUM}(?!\s*(?:to|-|–)\s*\d)", re.I)
# "4.5/5", "4 out of 5" anywhere
_FRACTION = re.compile(rf"(?<![\d.]){_NUM}{_OUT_OF_5}(?!\.?\d)", re.I)
_FIRST_NUM = re.compile(rf"(?<![\w.]){_NUM}(?![\d])")
_LIST_MARKER = re.compile(r"^\s*\d+[.)]\s+[A-Za-z]")
_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.S)


def _in_range(score: float) -> bool:
    return SCORE_MIN <= score <= SCORE_MAX


def _from_json(text: str) -> ParsedReply | None:
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1).strip()
    if not stripped.startswith("{"):
        return None
    try:
        obj = json.loads(stripped)
    except (ValueError, RecursionError):  # not JSON; nested deeper than the recursion limit; huge ints
        return None
    if not isinstance(obj, dict):
        return None
    for key in ("score", "rating", "Score"):
        v = obj.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            expl = obj.get("explanation") or obj.get("reason") or obj.get("feedback") or ""
            return ParsedReply(float(v), str(expl).strip(), "json")
        if isinstance(v, str) and re.fullmatch(_NUM, v.strip()):
            return ParsedReply(float(v.strip()), str(obj.get("explanation") or "").strip(), "json")
    return None


def parse_judge_reply(text: str) -> ParsedReply:
    """The score and explanation of a free-text judge reply; ``score`` None (with ``how``
    saying why) when the reply holds no score in 0..5. Tried in order, first hit wins:

    1. a first line that is only the score (``4.5``, ``**4.5**``, ``Score: 4``, ``4/5``) —
       AlpaGasus' own format; the explanation is the rest;
    2. a JSON object with ``score`` (a structured reply read as text);
    3. ``Assistant 1: 4`` (FastChat's review format);
    4. a labelled score anywhere: ``Score: 4.5``, ``score of 4``, ``rating: 4/5``, ``rated 4``
       (not the scale itself: ``score on a scale of 0 to 5``);
    5. a fraction of 5 anywhere: ``4.5/5``, ``4 out of 5``;
    6. the first number of the first line (not a list marker ``1. ...``).
    """
    if not isinstance(text, str) or not text.strip():
        return ParsedReply(None, "", "empty reply")
    stripped = text.strip()
    first, _, rest = stripped.partition("\n")
    head = first.strip(_DECOR).rstrip(":").strip(_DECOR)
    found: tuple[float, str, str] | None = None
    m = _ALONE.fullmatch(head)
    if m:
        found = (float(m.group(1)), rest.strip(), "first_line")
    if found is None:
        j = _from_json(stripped)
        if j is not None:
            found = (j.score, j.explanation, j.how)  # type: ignore[assignment]
    if found is None:
        for how, pattern in (("assistant", _ASSISTANT), ("labelled", _LABELLED), ("fraction", _FRACTION)):
            m = pattern.search(stripped)
            if m:
                found = (float(m.group(1)), stripped, how)
                break
    if found is None and not _LIST_MARKER.match(first):
        m = _FIRST_NUM.search(first)
        if m:
            found = (float(m.group(1)), stripped, "first_number")
    if found is None:
        return ParsedReply(None, stripped, "no score in reply")
    score, explanation, how = found
    if not _in_range(score):
        return ParsedReply(None, stripped, f"score {score:g} outside {SCORE_MIN:g}..{SCORE_MAX:g} ({how})")
    return ParsedReply(score, explanation or stripped, how)


# --------------------------------------------------------------------------- asking the judge


@dataclass
class Judgement:
    score: float | None
    reason: str
    error: str | None  # None when judged; "unparseable" or "teacher_error:<reason>"


# structured requests that fail these ways are asked again as free text under ``output: auto``
_FALLBACK_REASONS = ("schema_invalid", "http_400", "http_422", "length")


async def judge_one(client: TeacherClient, t: Triplet, cfg: JudgeConfig) -> Judgement:
    """One judgement: structured when ``cfg.output`` allows, else (or after the endpoint failed
    the schema, with ``auto``) free text read by :func:`parse_judge_reply`."""
    if cfg.output in ("auto", "structured"):
        try:
            c = await client.complete_structured(judge_messages(t, cfg.rubric, True), JudgeVerdict,
                                                 temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                                                 name="alpagasus_judgement")
            v = c.parsed
            assert isinstance(v, JudgeVerdict)
            return Judgement(v.score, v.explanation.strip(), None)
        except TeacherError as err:
            if cfg.output == "structured" or err.reason not in _FALLBACK_REASONS:
                return Judgement(None, f"teacher failed: {err.reason}: {err}", f"teacher_error:{err.reason}")
    try:
        c = await client.complete(judge_messages(t, cfg.rubric, False), temperature=cfg.temperature,
                                  max_tokens=cfg.max_tokens)
    except TeacherError as err:
        return Judgement(None, f"teacher failed: {err.reason}: {err}", f"teacher_error:{err.reason}")
    p = parse_judge_reply(c.text)
    if p.ok:
        return Judgement(p.score, p.explanation, None)
    return Judgement(None, f"{p.how}: {c.text.strip()[:500]!r}", "unparseable")


async def judge_triplets(client: TeacherClient, triplets: Sequence[Triplet], cfg: JudgeConfig,
                         on_done: Callable[[], None] | None = None) -> list[Judgement]:
    """Every triplet judged; the client bounds the concurrency (``teacher.max_concurrency``)."""

    async def one(t: Triplet) -> Judgement:
        j = await judge_one(client, t, cfg)
        if on_done:
            on_done()
        return j

    return list(await asyncio.gather(*(one(t) for t in triplets)))


# --------------------------------------------------------------------------- tables


_RENDER_COLUMNS = ("instruction", "input", "output", "response", "messages", "question", "rationale", "text")


def judged_mask(table: pa.Table, cfg: JudgeConfig) -> pa.Array:
    """Rows the judge looks at: those whose ``kind`` is in ``apply_to`` (all rows of a table
    without ``kind``, such as a user file)."""
    if "kind" not in table.column_names:
        return pa.array([True] * table.num_rows, pa.bool_())
    return pc.fill_null(pc.is_in(table.column("kind"), pa.array(list(cfg.apply_to), pa.string())), False)


def add_judgements(table: pa.Table, mask: pa.Array, judgements: Sequence[Judgement], rubric: str) -> pa.Table:
    """``table`` with the judge columns; rows outside ``mask`` get nulls."""
    it = iter(judgements)
    scores, reasons, rubrics, errors = [], [], [], []
    for on in mask.to_pylist():
        j = next(it) if on else None
        scores.append(j.score if j else None)
        reasons.append(j.reason if j else None)
        rubrics.append(rubric if j else None)
        errors.append(j.error if j else None)
    table = table.drop_columns([c for c in JUDGE_COLUMNS if c in table.column_names])
    for name, values, typ in (("judge_score", scores, pa.float64()), ("judge_reason", reasons, pa.string()),
                              ("judge_rubric", rubrics, pa.string()), ("judge_error", errors, pa.string())):
        table = table.append_column(pa.field(name, typ), pa.array(values, typ))
    return table


def score_table(table: pa.Table, cfg: JudgeConfig, client: TeacherClient) -> pa.Table:
    """Ask the judge about every row in ``apply_to``; returns the table with the judge columns."""
    mask = judged_mask(table, cfg)
    picked = table.filter(mask).select([c for c in _RENDER_COLUMNS if c in table.column_names])
    triplets = [render_row(r) for r in picked.to_pylist()]

    async def go() -> list[Judgement]:
        try:
            with progress_bar(f"judge ({cfg.rubric})", len(triplets), status=client.stats.summary) as advance:
                return await judge_triplets(client, triplets, cfg, on_done=advance)
        finally:
            await client.aclose()

    judgements = asyncio.run(go()) if triplets else []
    return add_judgements(table, mask, judgements, cfg.rubric)


def _num(x: float) -> str:
    return repr(float(x))  # 4.0 -> "4.0", 4.49 -> "4.49": never rounded into the threshold


def cut_judged(table: pa.Table, threshold: float, on_failure: Literal["drop", "keep"] = "drop"
               ) -> tuple[pa.Table, pa.Table]:
    """Split a judged table: keep ``judge_score >= threshold`` (inclusive), rows not judged
    (outside ``apply_to``) and, with ``on_failure: keep``, failed judgements. Dropped rows get
    ``judge:score_<s><<threshold>`` or ``judge:<error>`` (``judge:unparseable``,
    ``judge:teacher_error:http_500``)."""
    score = table.column("judge_score")
    error = table.column("judge_error")
    rubric = table.column("judge_rubric")
    not_judged = pc.is_null(rubric)
    failed = pc.and_(pc.invert(not_judged), pc.is_valid(error))
    passed = pc.fill_null(pc.greater_equal(score, pa.scalar(float(threshold))), False)
    keep = pc.or_(pc.or_(not_judged, passed), failed if on_failure == "keep" else pa.scalar(False))
    keep = pc.fill_null(keep, False)
    rejected = table.filter(pc.invert(keep))
    reasons = [f"judge:{e}" if e is not None else f"judge:score_{_num(s)}<{_num(threshold)}"
               for s, e in zip(rejected.column("judge_score").to_pylist(), rejected.column("judge_error").to_pylist())]
    return table.filter(keep), with_drop(rejected, STAGE, pa.array(reasons, pa.string()))


def apply_judge(table: pa.Table, cfg: JudgeConfig, teacher: TeacherConfig, cache_path: str | Path | None = None,
                base_url: str | None = None, stats_out: dict | None = None, acquire=None) -> tuple[pa.Table, pa.Table]:
    """Judge ``table`` with the teacher and cut at ``cfg.threshold``: (kept, rejected).
    ``stats_out["teacher"]`` receives the client's request, token and cost counts; ``acquire``
    (an async callable) is awaited before every request (flows/ passes a slot of the teacher's
    rate limit shared by runs)."""
    cache = RequestCache(cache_path) if cache_path else None
    try:
        client = TeacherClient(teacher, cache, base_url=base_url, acquire=acquire)
        try:
            scored = score_table(table, cfg, client)
        finally:
            if stats_out is not None:
                stats_out["teacher"] = client.stats.as_dict()
    finally:
        if cache is not None:
            cache.close()
    return cut_judged(scored, cfg.threshold, cfg.on_failure)


def judge_summary(kept: pa.Table, rejected: pa.Table) -> dict:
    """Counts for a one-line report: rows, judged, kept, below threshold, failed, mean score."""
    both = pa.concat_tables([kept.select(list(JUDGE_COLUMNS)), rejected.select(list(JUDGE_COLUMNS))])
    judged = pc.is_valid(both.column("judge_rubric"))
    failed = pc.sum(pc.and_(judged, pc.is_valid(both.column("judge_error")))).as_py() or 0
    mean = pc.mean(both.column("judge_score")).as_py()
    below = sum(1 for r in rejected.column("drop_reason").to_pylist() if r.startswith("judge:score_"))
    return {"rows": both.num_rows, "judged": pc.sum(judged).as_py() or 0, "kept": kept.num_rows,
            "below_threshold": below, "failed": failed, "mean_score": None if mean is None else round(mean, 3)}


def teacher_cache_path(cfg: PipelineConfig) -> Path:
    """The teacher's request cache, as the generation stages use it (``<local_dir>/cache/teacher.sqlite``;
    ``<data root>/cache/teacher.sqlite`` for a local data root)."""
    return cfg.teacher_cache_dir() / "teacher.sqlite"


def apply_judge_stage(table: pa.Table, cfg: PipelineConfig, acquire=None) -> tuple:
    """The pipeline stage: the pipeline's teacher (the embedded one is started by flows/ while
    this stage is pending) and its request cache, so a re-run asks nothing twice. Returns
    (kept, rejected, {"teacher": stats}): the stage's teacher use goes into run.json."""
    if table.num_rows == 0:
        empty = add_judgements(table, pa.array([], pa.bool_()), [], cfg.judge.rubric)
        return cut_judged(empty, cfg.judge.threshold, cfg.judge.on_failure)
    info: dict = {}
    kept, rejected = apply_judge(table, cfg.judge, cfg.teacher, teacher_cache_path(cfg), stats_out=info, acquire=acquire)
    return kept, rejected, info

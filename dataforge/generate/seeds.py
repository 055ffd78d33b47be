"""Seed loaders: turn files of questions into seeds, quarantining malformed records.

A malformed record never stops a run: it is reported with file, line and reason and set aside
in the run's quarantine file, and the rest of the file loads.

Formats (``cot.seed_format``; ``auto`` tells them apart by file name):

=================  ===========================================================================
``gsm8k``          JSON lines with ``question`` and ``answer`` (a worked solution ending in
                   ``#### N``, or a bare number); any other ``.jsonl`` is read this way, with
                   ``question_field`` / ``answer_field`` naming other fields
``flan_tsv``       FLAN's CoT exemplars (``flan/v2/cot_data``): question, answer, rationale,
                   tab-separated, newlines written as ``\\n``; options inside the question
``multiarith``,    the zero-shot-CoT copies (kojima-takeshi188/zero_shot_cot): a JSON array of
``addsub``,        ``sQuestion`` with ``lSolutions``
``singleeq``
``svamp``          a JSON array of ``Body``, ``Question``, ``Answer``
``aqua``           JSON lines of ``question``, ``options`` (``"A)21"``), ``rationale``, ``correct``
``commonsenseqa``  JSON lines of ``question.stem``, ``question.choices`` (label, text), ``answerKey``
``strategyqa``     BIG-bench's task JSON: ``examples`` of ``input`` and ``target_scores``
=================  ===========================================================================

Multiple-choice questions carry their options in the question text (the rendering of Kojima
et al. 2022: ``... Answer Choices: (A) bank (B) library ...``), since that is what the
teacher, and later the student, reads; the parsed options travel with the seed so an
answer can be checked against them.
"""

from __future__ import annotations

import bisect
import glob
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from dataforge.config import ConfigError
from dataforge.generate.answers import Choice, format_options, gold_from_gsm8k, parse_gold, parse_options
from dataforge.tabular import (  # noqa: F401 (Quarantined, write_quarantine: re-exported)
    Quarantined, check_file_size, iter_json_lines, iter_lines, lone_surrogate, write_quarantine)

log = logging.getLogger("dataforge.seeds")

SeedFormat = Literal["gsm8k", "flan_tsv", "multiarith", "addsub", "singleeq", "svamp", "aqua",
                     "commonsenseqa", "strategyqa"]
SEED_FORMATS: tuple[str, ...] = get_args(SeedFormat)


class SeedFormatError(ConfigError):
    """A seed file that cannot be read at all (unknown format, wrong top-level structure)."""


@dataclass(frozen=True)
class Seed:
    seed_id: str
    question: str
    gold_answer: str | None
    source: str  # the seed set ("gsm8k", "aqua", "flan_ecqa", ...): the ``seed_source`` column
    line: int  # line of the file where the record starts
    file: str = ""
    answer_type: str = "numeric"  # numeric | option | yesno | text (dataforge.generate.answers)
    options: tuple[Choice, ...] = ()
    record: int | None = None  # index of the record in a JSON array
    parent_seed_id: str | None = None  # a synthesized question: the seed it was written from
    synth_request_hash: str | None = None  # a synthesized question: the teacher request that wrote it


def seed_id(question: str) -> str:
    return hashlib.sha256(question.strip().encode()).hexdigest()[:16]


class _Collector:
    """Accumulates seeds and quarantined records of one or more files; a question seen
    before (in any file) is quarantined as a duplicate naming where it was first seen."""

    def __init__(self) -> None:
        self.seeds: list[Seed] = []
        self.bad: list[Quarantined] = []
        self.first_seen: dict[str, str] = {}

    def reject(self, path: Path, line: int, reason: str, raw: str, record: int | None = None) -> None:
        self.bad.append(Quarantined(str(path), line, reason, raw, record))  # raw cut by Quarantined
        where = f"line {line}" + (f" (record {record})" if record is not None else "")
        log.warning("%s %s: %s (quarantined)", path, where, reason)

    def add(self, path: Path, line: int, raw: str, question: str, gold: str | None, source: str,
            answer_type: str, options: tuple[Choice, ...] = (), record: int | None = None) -> None:
        question = question.strip()
        sid = seed_id(question)
        if sid in self.first_seen:
            self.reject(path, line, f"duplicate question (first seen at {self.first_seen[sid]})", raw, record)
            return
        self.first_seen[sid] = f"{path}:{line}"
        self.seeds.append(Seed(sid, question, gold, source, line, str(path), answer_type, options, record))


def _require_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"seed file not found: {path}")


_lines = iter_lines


def _json_lines(path: Path, c: _Collector) -> Iterator[tuple[int, str, dict]]:
    """The JSON objects of a JSON-lines file; bad lines go to the collector's quarantine."""
    for lineno, obj, err, raw in iter_json_lines(path):
        if obj is None:
            c.reject(path, lineno, err or "unreadable", raw)
            continue
        yield lineno, raw, obj


def _json_records(path: Path, c: _Collector, array_key: str | None = None
                  ) -> Iterator[tuple[int, int, str, dict]]:
    """(line, index, raw, object) for each record of a JSON array (the file's top level, or
    the array under ``array_key`` of a top-level object). Records are decoded one at a time,
    so each gets its own line number and one broken record quarantines only the rest of the
    file from there, not what came before."""
    check_file_size(path)
    data = path.read_bytes()
    text = data.decode("utf-8-sig", errors="replace")
    bad_utf8 = text.count("\ufffd") - data.count("\ufffd".encode("utf-8"))
    if bad_utf8:
        log.warning("%s: %d byte sequence%s that are not UTF-8 (read as U+FFFD)", path, bad_utf8,
                    "s" if bad_utf8 != 1 else "")
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]

    def line_of(pos: int) -> int:
        return bisect.bisect_right(starts, pos)

    dec = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if array_key is not None and text.startswith("{", pos):
        key_pos = _find_key(text, array_key)
        if key_pos is None:
            raise SeedFormatError(f"{path}: expected a top-level object with an {array_key!r} array")
        pos = key_pos
    elif not text.startswith("[", pos):
        what = "an object" if text.startswith("{", pos) else "something else"
        raise SeedFormatError(f"{path} line {line_of(pos)}: expected a JSON array of records, found {what}")
    pos = _skip_ws(text, pos + 1)
    index = 0
    while pos < len(text) and text[pos] != "]":
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            c.reject(path, err.lineno, f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}; "
                     "the rest of the file cannot be read", text[pos: pos + 200], index)
            return
        except (RecursionError, ValueError) as err:  # nested too deep; an integer of > 4300 digits
            why = "JSON nested too deeply to read" if isinstance(err, RecursionError) else f"not readable JSON: {err}"
            c.reject(path, line_of(pos), f"{why}; the rest of the file cannot be read", text[pos: pos + 200], index)
            return
        raw = text[pos:end]
        if isinstance(obj, dict) and lone_surrogate(raw, obj):
            c.reject(path, line_of(pos), "invalid Unicode: an unpaired surrogate escape (\\udXXX) is not text", raw, index)
        elif isinstance(obj, dict):
            yield line_of(pos), index, raw, obj
        else:
            c.reject(path, line_of(pos), f"expected a JSON object, got {type(obj).__name__}", raw, index)
        index += 1
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
        elif pos < len(text) and text[pos] != "]":
            c.reject(path, line_of(pos), f"expected ',' or ']' after record {index - 1}; "
                     "the rest of the file cannot be read", text[pos: pos + 200], index)
            return
    if pos >= len(text):
        c.reject(path, line_of(len(text) - 1), "the JSON array is not closed (truncated file?)", "", index)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _find_key(text: str, key: str) -> int | None:
    """Position of the ``[`` that opens ``"key": [`` at the first nesting level of an object."""
    dec = json.JSONDecoder()
    pos = _skip_ws(text, text.index("{") + 1)
    while pos < len(text) and text[pos] != "}":
        try:
            k, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError:
            return None
        pos = _skip_ws(text, pos)
        if pos >= len(text) or text[pos] != ":":
            return None
        pos = _skip_ws(text, pos + 1)
        if k == key:
            return pos if text.startswith("[", pos) else None
        try:
            _, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError:
            return None
        pos = _skip_ws(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
    return None


def _string_field(obj: dict, field: str) -> str | None:
    v = obj.get(field)
    return v if isinstance(v, str) and v.strip() else None


# --- the loaders ---------------------------------------------------------------------------

def load_gsm8k_jsonl(path: str | Path, question_field: str = "question", answer_field: str = "answer",
                     source: str = "gsm8k", _c: _Collector | None = None) -> tuple[list[Seed], list[Quarantined]]:
    """Read GSM8K-format JSON lines (``question``, ``answer`` with a final ``#### N``).
    A line without an answer field is a seed without gold."""
    p = Path(path)
    _require_file(p)
    c = _c or _Collector()
    for lineno, raw, obj in _json_lines(p, c):
        q = _string_field(obj, question_field)
        if q is None:
            c.reject(p, lineno, f"missing or empty string field {question_field!r}", raw)
            continue
        a = obj.get(answer_field)
        if a is not None and (isinstance(a, bool) or not isinstance(a, (str, int, float))):
            c.reject(p, lineno, f"field {answer_field!r} must be a string or number", raw)
            continue
        gold = parse_gold(a, "numeric") if a is not None else None
        if a is not None and gold is None:
            c.reject(p, lineno, f"field {answer_field!r} holds no numeric final answer", raw)
            continue
        c.add(p, lineno, raw, q, gold, source, "numeric")
    return c.seeds, c.bad


def flan_source(path: Path) -> str:
    """``aqua_train.tsv`` → ``flan_aqua``."""
    stem = path.stem.lower()
    for suffix in ("_train", "_dev", "_test", "_validation"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return f"flan_{stem}"


def load_flan_tsv(path: str | Path, source: str | None = None,
                  _c: _Collector | None = None) -> tuple[list[Seed], list[Quarantined]]:
    """FLAN CoT exemplars: ``question \\t answer \\t rationale`` per line (``\\n`` escaped).

    The answer type follows from the question: options ``yes``/``no`` only, or no options and
    a yes/no answer → ``yesno``; other options → ``option`` (the answer must be one of them);
    no options and a numeric answer → ``numeric``; else ``text``."""
    p = Path(path)
    _require_file(p)
    c = _c or _Collector()
    src = source or flan_source(p)
    for lineno, raw in _lines(p):
        if not raw.strip():
            continue
        fields = raw.split("\t")
        if len(fields) != 3:
            c.reject(p, lineno, f"expected 3 tab-separated fields (question, answer, rationale), got {len(fields)}", raw)
            continue
        question, answer, _rationale = (f.replace("\\n", "\n").strip() for f in fields)
        if not question:
            c.reject(p, lineno, "empty question (field 1)", raw)
            continue
        if not answer:
            c.reject(p, lineno, "empty answer (field 2)", raw)
            continue
        options = parse_options(question)
        texts = {o.text.strip().lower() for o in options}
        if (options and texts == {"yes", "no"}) or (not options and answer.strip(".").lower() in ("yes", "no")):
            answer_type, options = "yesno", ()
        elif options:
            answer_type = "option"
        elif gold_from_gsm8k(answer) is not None:
            answer_type = "numeric"
        else:
            answer_type = "text"
        gold = parse_gold(answer, answer_type, options)
        if gold is None:
            listed = ", ".join(o.key for o in options)
            reason = (f"answer {answer!r} (field 2) is not one of the options ({listed})" if answer_type == "option"
                      else f"answer {answer!r} (field 2) is not a {answer_type} answer")
            c.reject(p, lineno, reason, raw)
            continue
        c.add(p, lineno, raw, question, gold, src, answer_type, options)
    return c.seeds, c.bad


def _load_numeric_array(path: Path, source: str, c: _Collector, question: Callable[[dict], str | None],
                        question_desc: str, answer: Callable[[dict], Any], answer_desc: str,
                        array_key: str | None = None) -> None:
    for line, idx, raw, obj in _json_records(path, c, array_key):
        q = question(obj)
        if q is None:
            c.reject(path, line, f"missing or empty string field {question_desc}", raw, idx)
            continue
        a = answer(obj)
        gold = parse_gold(a, "numeric") if isinstance(a, (str, int, float)) and not isinstance(a, bool) else None
        if gold is None:
            c.reject(path, line, f"field {answer_desc} holds no number (got {json.dumps(a)[:80]})", raw, idx)
            continue
        c.add(path, line, raw, q, gold, source, "numeric", record=idx)


def load_arith_json(path: str | Path, source: str,
                    _c: _Collector | None = None) -> tuple[list[Seed], list[Quarantined]]:
    """MultiArith, AddSub, SingleEq as in zero_shot_cot: ``sQuestion`` and ``lSolutions[0]``."""
    p = Path(path)
    _require_file(p)
    c = _c or _Collector()

    def solution(o: dict) -> Any:
        sol = o.get("lSolutions")
        return sol[0] if isinstance(sol, list) and sol else None

    _load_numeric_array(p, source, c, lambda o: _string_field(o, "sQuestion"), "'sQuestion'", solution,
                        "'lSolutions'")
    return c.seeds, c.bad


def load_svamp_json(path: str | Path, source: str = "svamp",
                    _c: _Collector | None = None) -> tuple[list[Seed], list[Quarantined]]:
    """SVAMP: the question is ``Body`` + " " + ``Question`` (as Kojima et al. join them)."""
    p = Path(path)
    _require_file(p)
    c = _c or _Collector()

    def question(o: dict) -> str | None:
        body, q = o.get("Body"), _string_field(o, "Question")
        if q is None or not isinstance(body, str):
            return None
        return f"{body.strip()} {q.strip()}".strip()

    _load_numeric_array(p, source, c, question, "'Body' and 'Question'", lambda o: o.get("Answer"), "'Answer'")
    return c.seeds, c.bad


def load_aqua_jsonl(path: str | Path, source: str = "aqua",
                    _c: _Collector | None = None) -> tuple[list[Seed], list[Quarantined]]:
    """AQuA-RAT lines: ``question``, ``options`` (``["A)21", "B)21.5", ...]``), ``correct``."""
    p = Path(path)
    _require_file(p)
    c = _c or _Collector()
    for lineno, raw, obj in _json_lines(p, c):
        q = _string_field(obj, "question")
        if q is None:
            c.reject(p, lineno, "missing or empty string field 'question'", raw)
            continue
        opts = obj.get("options")
        if not isinstance(opts, list) or not opts or not all(isinstance(o, str) for o in opts):
            c.reject(p, lineno, "field 'options' must be a non-empty list of strings like \"A)21\"", raw)
            continue
        choices = parse_options("Options:\n" + "\n".join(opts))
        if len(choices) != len(opts) or not all(ch.label for ch in choices):
            c.reject(p, lineno, "field 'options' has an item that is not \"<letter>)<text>\"", raw)
            continue
        gold = parse_gold(obj.get("correct"), "option", choices)
        if gold is None:
            c.reject(p, lineno, f"field 'correct' ({obj.get('correct')!r}) is not one of the option letters", raw)
            continue
        c.add(p, lineno, raw, f"{q.strip()}\n{format_options(choices)}", gold, source, "option", choices)
    return c.seeds, c.bad


def load_commonsenseqa_jsonl(path: str | Path, source: str = "commonsenseqa",
                             _c: _Collector | None = None) -> tuple[list[Seed], list[Quarantined]]:
    """CommonsenseQA lines: ``question.stem``, ``question.choices`` [{label, text}], ``answerKey``."""
    p = Path(path)
    _require_file(p)
    c = _c or _Collector()
    for lineno, raw, obj in _json_lines(p, c):
        qobj = obj.get("question")
        stem = _string_field(qobj, "stem") if isinstance(qobj, dict) else None
        if stem is None:
            c.reject(p, lineno, "missing or empty string field 'question.stem'", raw)
            continue
        raw_choices = qobj.get("choices")
        if (not isinstance(raw_choices, list) or not raw_choices
                or not all(isinstance(ch, dict) and isinstance(ch.get("label"), str) and isinstance(ch.get("text"), str)
                           for ch in raw_choices)):
            c.reject(p, lineno, "field 'question.choices' must be a list of {label, text}", raw)
            continue
        choices = tuple(Choice(ch["label"].strip().upper(), ch["text"].strip()) for ch in raw_choices)
        gold = parse_gold(obj.get("answerKey"), "option", choices)
        if gold is None:
            c.reject(p, lineno, f"field 'answerKey' ({obj.get('answerKey')!r}) is not one of the choice labels", raw)
            continue
        c.add(p, lineno, raw, f"{stem.strip()}\n{format_options(choices)}", gold, source, "option", choices)
    return c.seeds, c.bad


def load_strategyqa_json(path: str | Path, source: str = "strategyqa",
                         _c: _Collector | None = None) -> tuple[list[Seed], list[Quarantined]]:
    """StrategyQA as BIG-bench's task file: ``examples`` of ``input`` and ``target_scores``
    (``{"Yes": 1, "No": 0}``); a plain JSON array of such examples works too."""
    p = Path(path)
    _require_file(p)
    c = _c or _Collector()
    for line, idx, raw, obj in _json_records(p, c, array_key="examples"):
        q = _string_field(obj, "input")
        if q is None:
            c.reject(p, line, "missing or empty string field 'input'", raw, idx)
            continue
        scores = obj.get("target_scores")
        if not isinstance(scores, dict) or scores.get("Yes") not in (0, 1) or scores.get("No") not in (0, 1) \
                or scores.get("Yes") == scores.get("No"):
            c.reject(p, line, "field 'target_scores' must be {\"Yes\": 0|1, \"No\": 1|0}", raw, idx)
            continue
        c.add(p, line, raw, q, "yes" if scores["Yes"] == 1 else "no", source, "yesno", record=idx)
    return c.seeds, c.bad


# --- by format -----------------------------------------------------------------------------

def detect_format(path: str | Path) -> str:
    """The seed format a file name implies: ``*.tsv`` is FLAN; a data set's name in the file
    name picks its loader; any other ``.jsonl`` is GSM8K-style question/answer lines."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(".tsv"):
        return "flan_tsv"
    for fmt, hints in (("multiarith", ("multiarith",)), ("addsub", ("addsub",)), ("singleeq", ("singleeq",)),
                       ("svamp", ("svamp",)), ("aqua", ("aqua",)), ("commonsenseqa", ("commonsenseqa", "csqa")),
                       ("strategyqa", ("strategyqa",)), ("gsm8k", ("gsm8k",))):
        if any(h in name for h in hints):
            return fmt
    if name.endswith(".jsonl"):
        return "gsm8k"
    raise SeedFormatError(f"{p}: cannot tell the seed format from the file name; set cot.seed_format to one of "
                          f"{', '.join(SEED_FORMATS)}")


def load_seed_file(path: str | Path, fmt: str = "auto", question_field: str = "question",
                   answer_field: str = "answer", _c: _Collector | None = None) -> tuple[list[Seed], list[Quarantined]]:
    """Load one seed file in ``fmt`` (``auto``: by its name, :func:`detect_format`)."""
    p = Path(path)
    _require_file(p)
    fmt = detect_format(p) if fmt == "auto" else fmt
    if fmt == "gsm8k":
        return load_gsm8k_jsonl(p, question_field, answer_field, _c=_c)
    if fmt == "flan_tsv":
        return load_flan_tsv(p, _c=_c)
    if fmt in ("multiarith", "addsub", "singleeq"):
        return load_arith_json(p, fmt, _c=_c)
    if fmt == "svamp":
        return load_svamp_json(p, _c=_c)
    if fmt == "aqua":
        return load_aqua_jsonl(p, _c=_c)
    if fmt == "commonsenseqa":
        return load_commonsenseqa_jsonl(p, _c=_c)
    if fmt == "strategyqa":
        return load_strategyqa_json(p, _c=_c)
    raise SeedFormatError(f"unknown seed format {fmt!r}; expected auto or one of {', '.join(SEED_FORMATS)}")


def expand_seed_paths(patterns: Sequence[str | Path]) -> list[Path]:
    """Seed paths with shell wildcards expanded (sorted); a pattern that matches nothing, or
    a plain path that does not exist, is a FileNotFoundError naming it."""
    out: list[Path] = []
    for pat in patterns:
        s = str(pat)
        if any(ch in s for ch in "*?["):
            hits = sorted(glob.glob(s))
            if not hits:
                raise FileNotFoundError(f"seed pattern matches no file: {s}")
            out.extend(Path(h) for h in hits)
        else:
            _require_file(Path(s))
            out.append(Path(s))
    return out


def load_seeds(paths: Sequence[str | Path], fmt: str = "auto", question_field: str = "question",
               answer_field: str = "answer") -> tuple[list[Seed], list[Quarantined]]:
    """Load several seed files (wildcards allowed) in order; a question repeated in a later
    file is quarantined as a duplicate of the first."""
    c = _Collector()
    for p in expand_seed_paths(paths):
        load_seed_file(p, fmt, question_field, answer_field, _c=c)
    return c.seeds, c.bad



"""fastText quality scores, and the cut on them (the ``quality`` curation stage).

A *scorer* adds ``quality_score`` and ``quality_model``; the *cut* (a threshold or a top
fraction) is a separate, cheap step on the score column, so re-cutting never re-scores
(dolma's attributes beside immutable documents are the model; DESIGN.md "Stages"). In a
pipeline the stage keeps every score it computes in a :class:`ScoreCache` (beside the teacher's
request cache), keyed by the model file's sha256, the scoring code and each text's hash -- not
by the cut -- so a run whose only change is the cut reads the scores back and applies the new
cut without loading the model.

``quality_score`` is:

* for a **binary** model (labels ``__label__0`` / ``__label__1``, as ``dataforge classifier
  train`` writes from positive and negative sources): the probability of the positive label,
  0..1 (DCLM, Li et al. 2024, keeps the documents with the highest such probability);
* for a **rubric** model (labels among ``__label__0`` .. ``__label__5``, trained on teacher
  ratings; FineWeb-Edu, Penedo et al. 2024): the expected rating ``sum_r r * p(r)``, 0..5.

Text normalisation (:func:`normalize_texts`) is applied both to training lines and to the
text being scored, so the model sees the same tokens in both:

1. lowercase (Unicode's simple one-to-one mapping, ``utf8_lower``: a final "Σ" becomes "σ");
2. every character that is not a letter (``\\p{L}``), a combining mark (``\\p{M}``), a number
   (``\\p{N}``), a separator (``\\p{Z}``) or a control character (``\\p{Cc}``) -- that is,
   punctuation and symbols -- becomes a token of its own (``"end." -> "end ."``), so fastText's
   whitespace tokeniser sees ``end`` and ``.`` instead of a rare ``end.``;
3. runs of separators and control characters (spaces, newlines, tabs, NUL) become one space
   and the ends are trimmed: one line per document, as fastText needs.

The bulk path runs these as three Arrow compute kernels (RE2 regexes) over a whole column;
:func:`normalize_text_reference` is the same rule written per character with
:mod:`unicodedata`, and the tests hold the two equal.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataforge.errors import DataforgeError
from dataforge.hashing import file_version_sha256
from dataforge.records import with_drop

if TYPE_CHECKING:
    from dataforge.config import PipelineConfig, QualityConfig

log = logging.getLogger("dataforge.quality")

LABEL_PREFIX = "__label__"
STAGE = "quality"
SCORE_COLUMN = "quality_score"
MODEL_COLUMN = "quality_model"
RATINGS = tuple(range(6))  # the educational-value rubric's 0..5

# --- normalisation ---------------------------------------------------------------------------

_PUNCT = r"([^\p{L}\p{M}\p{N}\p{Z}\p{Cc}])"
# a run of two or more separators/controls, or a single one that is not the plain space: a
# lone " " (most of them) is left alone, which makes this pass ~3x faster than "[...]+"
_SPACES = r"[\p{Z}\p{Cc}]{2,}|[^ \P{Z}]|\p{Cc}"


def normalize_texts(texts: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> pa.Array:
    """The normalised one-line form of every text (nulls stay null), in bulk on Arrow."""
    arr = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(list(texts), pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.string())
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    low = pc.utf8_lower(arr)
    split = pc.replace_substring_regex(low, _PUNCT, r" \1 ")
    return pc.utf8_trim(pc.replace_substring_regex(split, _SPACES, " "), " ")


def _is_space(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat[0] == "Z" or cat == "Cc"


def _is_word(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LMN"


def normalize_text_reference(text: str) -> str:
    """:func:`normalize_texts` for one text, written plainly (the tests' reference)."""
    tokens: list[str] = []
    word: list[str] = []
    for ch in text:
        ch = ch.lower()[:1] or ch  # the simple one-to-one mapping, as Arrow's: "İ" -> "i"
        if _is_word(ch):
            word.append(ch)
            continue
        if word:
            tokens.append("".join(word))
            word = []
        if not _is_space(ch):
            tokens.append(ch)
    if word:
        tokens.append("".join(word))
    return " ".join(tokens)


# --- models ----------------------------------------------------------------------------------

class QualityError(DataforgeError, ValueError):
    """A problem with a quality model or its use (missing file, unknown labels, bad cut)."""


@dataclass(frozen=True)
class QualityModel:
    """A loaded fastText classifier, what its score means, and how to name it in a row."""

    path: str
    model: object  # fasttext.FastText._FastText
    kind: str  # "binary" | "rating"
    labels: tuple[str, ...]  # as the model lists them, without the prefix
    values: np.ndarray  # the number each label stands for (binary: 0/1, rating: 0..5)
    name: str
    sha256: str

    @property
    def tag(self) -> str:
        """``quality_model`` value: the model's name and the start of its file hash."""
        return model_tag(self.name, self.sha256)

    @property
    def max_score(self) -> float:
        return max_score_of(self.kind)

    def predict_lines(self, lines: list[str]) -> np.ndarray:
        """Scores of already-normalised one-line texts: one ``model.predict`` call for all of
        them (fastText's C++ loop), then the label probabilities as an (n, labels) matrix."""
        if not lines:
            return np.zeros(0, np.float64)
        labels, probs = self.model.predict(lines, k=-1)
        lab = np.asarray(labels)  # (n, L) label strings, each row sorted by probability
        p = np.asarray(probs, dtype=np.float64).reshape(lab.shape)
        if self.kind == "binary":
            return (p * (lab == LABEL_PREFIX + "1")).sum(axis=1)
        num = np.zeros(lab.shape, np.float64)
        for label, value in zip(self.labels, self.values):
            num[lab == LABEL_PREFIX + label] = value
        # fastText floors each probability at 1e-5 before output; renormalise so 0..5 holds
        return (p * num).sum(axis=1) / p.sum(axis=1)

    def predict_line_reference(self, line: str) -> float:
        """One normalised line scored with its own ``predict`` call (the tests' reference)."""
        labels, probs = self.model.predict(line, k=-1)
        by_label = {lab.removeprefix(LABEL_PREFIX): float(p) for lab, p in zip(labels, probs)}
        if self.kind == "binary":
            return by_label.get("1", 0.0)
        total = sum(by_label.values())
        return sum(int(lab) * p for lab, p in by_label.items()) / total


def model_tag(name: str, sha256: str) -> str:
    """``quality_model`` value: a model's name and the start of its file hash."""
    return f"{name}@{sha256[:12]}"


def max_score_of(kind: str) -> float:
    """The highest score a model of ``kind`` gives: 1 (binary) or 5 (rating)."""
    return 1.0 if kind == "binary" else float(max(RATINGS))


def model_name(path: str) -> str:
    """A model's name: the ``name`` of the ``card.json`` beside it, else the file's stem (its
    folder's name for ``model.ftz`` / ``model.bin``)."""
    card = Path(path).with_name("card.json")
    name = Path(path).stem
    if card.exists():
        try:
            name = json.loads(card.read_text()).get("name") or name
        except (OSError, json.JSONDecodeError):
            pass
    if name in ("model",):
        name = Path(path).parent.name
    return name


def kind_of_labels(labels: Sequence[str], path: str) -> tuple[str, np.ndarray]:
    if set(labels) <= {"0", "1"} and len(labels) == 2:
        return "binary", np.array([int(x) for x in labels], np.float64)
    if labels and all(x.isdigit() and int(x) in RATINGS for x in labels):
        return "rating", np.array([int(x) for x in labels], np.float64)
    raise QualityError(f"{path}: labels {sorted(labels)} are neither binary (0, 1) nor ratings (0..5); "
                       "train it with `dataforge classifier train`")


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int, size: int) -> QualityModel:
    import fasttext

    try:
        model = fasttext.load_model(path)
    except ValueError as err:
        raise QualityError(f"{path}: not a fastText model: {err}") from None
    labels = tuple(lab.removeprefix(LABEL_PREFIX) for lab in model.get_labels())
    kind, values = kind_of_labels(labels, path)
    return QualityModel(path, model, kind, labels, values, model_name(path), file_version_sha256(path, mtime_ns, size))


def _model_file(path: str | os.PathLike) -> tuple[str, int, int]:
    """The resolved path of a model file, its mtime (ns) and size; QualityError when missing."""
    p = Path(path)
    if not p.is_file():
        raise QualityError(f"{p}: quality model not found (train one with `dataforge classifier train`)")
    st = p.stat()
    return str(p.resolve()), st.st_mtime_ns, st.st_size


def load_quality_model(path: str | os.PathLike) -> QualityModel:
    """Load (once per process, again when the file changes) a fastText classifier."""
    return _load(*_model_file(path))


def model_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a model file without loading the model (hashed again only when the file
    changes); QualityError when missing."""
    return file_version_sha256(*_model_file(path))


# --- scoring ---------------------------------------------------------------------------------

def score_texts(model: QualityModel, texts: pa.Array | pa.ChunkedArray | Sequence[str | None],
                batch_rows: int = 20_000, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """``quality_score`` of every text (NaN for a null text), ``batch_rows`` at a time so the
    normalised copies stay bounded; ``on_batch(n)`` is called after each batch."""
    arr = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(list(texts), pa.string())
    out = np.full(len(arr), np.nan)
    for start in range(0, len(arr), batch_rows):
        part = arr.slice(start, batch_rows)
        norm = normalize_texts(part)
        valid = pc.is_valid(norm).to_numpy(zero_copy_only=False)
        lines = pc.drop_null(norm).to_pylist()
        out[start: start + len(part)][valid] = model.predict_lines(lines)
        if on_batch is not None:
            on_batch(len(part))
    return out


def score_table(table: pa.Table, model: QualityModel, apply_to: Sequence[str] | None = None,
                batch_rows: int = 20_000, on_batch: Callable[[int], None] | None = None) -> pa.Table:
    """``table`` with ``quality_score`` (float64) and ``quality_model`` (string) added; rows
    whose ``kind`` is not in ``apply_to`` (when the table has a ``kind`` column and
    ``apply_to`` is given) get nulls in both."""
    scores = score_texts(model, texts_to_score(table, apply_to), batch_rows, on_batch)
    return with_scores(table, scores, model.tag)


def texts_to_score(table: pa.Table, apply_to: Sequence[str] | None = None) -> pa.ChunkedArray:
    """The ``text`` column with nulls for the rows whose ``kind`` is not in ``apply_to`` (when
    both are there): the texts :func:`score_table` scores."""
    if "text" not in table.column_names:
        raise QualityError(f"no 'text' column to score (columns: {', '.join(table.column_names)})")
    texts = table.column("text")
    if apply_to is not None and "kind" in table.column_names:
        applies = pc.fill_null(pc.is_in(table.column("kind"), value_set=pa.array(list(apply_to), pa.string())), False)
        texts = pc.if_else(applies, texts, pa.scalar(None, texts.type))
    return texts


def with_scores(table: pa.Table, scores: np.ndarray, tag: str) -> pa.Table:
    """``table`` with ``quality_score`` (float64; null where ``scores`` is NaN) and ``quality_model``
    (``tag`` on the scored rows) added, replacing earlier ones."""
    scored = ~np.isnan(scores)
    names = pa.array(np.where(scored, tag, None).tolist(), pa.string()) if len(scores) else pa.array([], pa.string())
    for col in (SCORE_COLUMN, MODEL_COLUMN):
        if col in table.column_names:
            table = table.drop_columns([col])
    table = table.append_column(SCORE_COLUMN, pa.array(scores, pa.float64(), mask=~scored))
    return table.append_column(MODEL_COLUMN, names)


# --- the score cache -------------------------------------------------------------------------

SCORING_VERSION = 1
"""Increase it when the code changes the score of a (model file, text) pair (e.g. how
:meth:`QualityModel.predict_lines` turns probabilities into a score): that starts a new cache."""
# what decides a score besides the model's bytes: the scoring code and the normalisation rule
SCORING_KEY = hashlib.sha256(f"{SCORING_VERSION}\x00{_PUNCT}\x00{_SPACES}".encode()).hexdigest()[:12]


def text_hashes(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The score cache's key of each text: blake2b-128 of its UTF-8 bytes (null for a null text)."""
    return pa.array([None if t is None else hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16)
                     .digest() for t in texts.to_pylist()], pa.binary(16))


class ScoreCache:
    """The scores computed so far, one Parquet file per model and scoring code:
    ``<directory>/<model sha256>-<SCORING_KEY>.parquet`` with ``text_hash`` (:func:`text_hashes`)
    and ``score``, and the model's kind (binary / rating) in the file's metadata.

    Nothing about the cut or the batch size is in the key, so a new cut finds every score. A
    file is replaced atomically (written beside it, then renamed); two runs adding at once may
    lose one's additions, which are scored again next time. A file that cannot be read counts
    as empty. Deleting the directory only costs re-scoring."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def path(self, sha256: str) -> Path:
        return self.directory / f"{sha256}-{SCORING_KEY}.parquet"

    def read(self, sha256: str) -> tuple[pa.Table | None, str | None]:
        """The cached (text_hash, score) table of a model and its kind; (None, None) if none."""
        p = self.path(sha256)
        if not p.is_file():
            return None, None
        try:
            table = pq.read_table(p)
            kind = (table.schema.metadata or {}).get(b"kind", b"").decode()
            if kind not in ("binary", "rating") or table.column_names != ["text_hash", "score"]:
                raise ValueError(f"unexpected contents (kind {kind!r}, columns {table.column_names})")
        except (OSError, ValueError, pa.ArrowException) as err:
            log.warning("%s: unreadable quality score cache (%s); scoring again", p, err)
            return None, None
        return table.replace_schema_metadata(None), kind

    def lookup(self, sha256: str, hashes: pa.Array) -> tuple[np.ndarray, str | None, pa.Table | None]:
        """The cached score of each hash (NaN: not cached, or a null hash), the model's kind
        (None: nothing cached) and the cached table (for :meth:`add`)."""
        scores = np.full(len(hashes), np.nan)
        cached, kind = self.read(sha256)
        if cached is not None and cached.num_rows and len(hashes):
            pos = pc.index_in(hashes, value_set=cached.column("text_hash").combine_chunks())
            found = pc.is_valid(pos).to_numpy(zero_copy_only=False)
            scores[found] = cached.column("score").to_numpy()[pc.drop_null(pos).to_numpy()]
        return scores, kind, cached

    def add(self, sha256: str, kind: str, hashes: pa.Array, scores: np.ndarray, cached: pa.Table | None = None) -> None:
        """Write the cache of a model again with these (hash, score) pairs added to ``cached``."""
        new = pa.table({"text_hash": hashes.cast(pa.binary(16)), "score": pa.array(scores, pa.float64())})
        if cached is not None and cached.num_rows:
            new = pa.concat_tables([cached.cast(new.schema), new])
        new = new.replace_schema_metadata({"kind": kind, "scoring_version": str(SCORING_VERSION)})
        self.directory.mkdir(parents=True, exist_ok=True)
        p = self.path(sha256)
        tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex}.tmp")
        try:
            pq.write_table(new, tmp)
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)


def score_with_cache(table: pa.Table, qcfg: QualityConfig, model_path: str | os.PathLike, cache: ScoreCache,
                     on_batch: Callable[[int], None] | None = None) -> pa.Table:
    """:func:`score_table` with the model at ``model_path``, reading the scores of texts scored
    before from ``cache`` and adding the new ones: the model is loaded only when some text has
    no cached score (or nothing is cached for it yet, to learn its kind); each distinct new text
    is scored once. Checks the cut against the model's highest score, as :func:`apply_quality`."""
    path, mtime_ns, size = _model_file(model_path)
    sha = file_version_sha256(path, mtime_ns, size)
    texts = texts_to_score(table, qcfg.apply_to)
    hashes = text_hashes(texts)
    scores, kind, cached = cache.lookup(sha, hashes)
    todo = np.flatnonzero(hashes.is_valid().to_numpy(zero_copy_only=False) & np.isnan(scores))
    model = _load(path, mtime_ns, size) if len(todo) or kind is None else None
    if model is not None:
        kind = model.kind
    assert kind is not None
    check_cut(qcfg, kind, path)
    if model is not None and len(todo):
        keys = hashes.to_pylist()
        first: dict[bytes, int] = {}
        for i in todo.tolist():
            first.setdefault(keys[i], i)
        rows = np.fromiter(first.values(), np.int64, len(first))
        texts = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
        new = score_texts(model, texts.take(pa.array(rows)), qcfg.batch_rows, on_batch)
        by_hash = dict(zip(first, new.tolist()))
        scores[todo] = [by_hash[keys[i]] for i in todo.tolist()]
        cache.add(sha, kind, hashes.take(pa.array(rows)), new, cached)
    return with_scores(table, scores, model_tag(model_name(path), sha))


# --- the cut ---------------------------------------------------------------------------------

def top_fraction_cutoff(scores: np.ndarray, fraction: float) -> float | None:
    """The score of the ``ceil(fraction * n)``-th best of the non-NaN ``scores`` (None when
    there are none): keeping ``score >= cutoff`` keeps that many rows, more on ties."""
    valid = scores[~np.isnan(scores)]
    if not len(valid):
        return None
    k = max(1, math.ceil(fraction * len(valid)))
    return float(np.partition(valid, len(valid) - k)[len(valid) - k])


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def cut_scores(table: pa.Table, threshold: float | None = None, top_fraction: float | None = None
               ) -> tuple[pa.Table, pa.Table]:
    """Split a scored table into (kept, rejected) on ``quality_score``: below ``threshold``, or
    outside the ``top_fraction`` best-scoring rows, is dropped with
    ``drop_reason = quality:below_threshold(<score><<threshold>)`` (or ``below_top_fraction``
    with the cutoff score). Rows with a null score (not scored) are kept. Vectorised on Arrow."""
    if (threshold is None) == (top_fraction is None):
        raise QualityError("cut: give exactly one of threshold or top_fraction")
    if SCORE_COLUMN not in table.column_names:
        raise QualityError(f"no {SCORE_COLUMN!r} column: score the rows first")
    score = table.column(SCORE_COLUMN)
    if top_fraction is not None:
        cutoff = top_fraction_cutoff(score.to_numpy(zero_copy_only=False).astype(np.float64), top_fraction)
        rule = "below_top_fraction"
    else:
        cutoff, rule = threshold, "below_threshold"
    if cutoff is None:
        return table, with_drop(table.slice(0, 0), STAGE, [])
    drop = pc.fill_null(pc.less(score, pa.scalar(cutoff, pa.float64())), False)
    rejected = table.filter(drop)
    shown = pc.cast(pc.round(rejected.column(SCORE_COLUMN), 4), pa.string())
    reasons = pc.binary_join_element_wise(f"{STAGE}:{rule}(", shown, f"<{_fmt(cutoff)})", "")
    return table.filter(pc.invert(drop)), with_drop(rejected, STAGE, reasons.combine_chunks()
                                                    if isinstance(reasons, pa.ChunkedArray) else reasons)


def cut_scores_reference(rows: list[dict], threshold: float | None = None, top_fraction: float | None = None
                         ) -> tuple[list[dict], list[tuple[dict, str]]]:
    """:func:`cut_scores` row by row in plain Python (the tests' reference)."""
    scores = sorted((r[SCORE_COLUMN] for r in rows if r[SCORE_COLUMN] is not None), reverse=True)
    if top_fraction is not None:
        if not scores:
            return rows, []
        cutoff, rule = scores[max(1, math.ceil(top_fraction * len(scores))) - 1], "below_top_fraction"
    else:
        cutoff, rule = threshold, "below_threshold"
    kept, dropped = [], []
    for r in rows:
        s = r[SCORE_COLUMN]
        if s is not None and s < cutoff:
            dropped.append((r, f"{STAGE}:{rule}({round(s, 4):g}<{_fmt(cutoff)})"))
        else:
            kept.append(r)
    return kept, dropped


# --- the pipeline stage ----------------------------------------------------------------------

def check_cut(qcfg: QualityConfig, kind: str, model_path: str) -> None:
    """QualityError when the cut's threshold is above the highest score of a ``kind`` model."""
    top = max_score_of(kind)
    if qcfg.cut is not None and qcfg.cut.threshold is not None and qcfg.cut.threshold > top:
        raise QualityError(f"quality.cut.threshold: {qcfg.cut.threshold} is above {top:g}, the highest "
                           f"score of the {kind} model {model_path}")


def apply_quality(table: pa.Table, qcfg: QualityConfig, model_path: str | os.PathLike,
                  on_batch: Callable[[int], None] | None = None,
                  cache: ScoreCache | None = None) -> tuple[pa.Table, pa.Table]:
    """Score ``table`` with the model at ``model_path`` (through ``cache`` when given:
    :func:`score_with_cache`), then cut (when ``qcfg.cut`` is set)."""
    if cache is not None:
        scored = score_with_cache(table, qcfg, model_path, cache, on_batch)
    else:
        model = load_quality_model(model_path)
        check_cut(qcfg, model.kind, model.path)
        scored = score_table(table, model, qcfg.apply_to, qcfg.batch_rows, on_batch)
    if qcfg.cut is None:
        return scored, with_drop(scored.slice(0, 0), STAGE, [])
    return cut_scores(scored, qcfg.cut.threshold, qcfg.cut.top_fraction)


def model_path_of(cfg: PipelineConfig) -> Path:
    if not cfg.quality.model:
        raise QualityError("quality.model: required when quality is enabled")
    return cfg.resolve_path(cfg.quality.model)


def apply_quality_stage(table: pa.Table, cfg: PipelineConfig) -> tuple[pa.Table, pa.Table]:
    """The ``quality`` stage of a pipeline (a whole-table stage: ``top_fraction`` needs every
    score of the run, and one core scores about 7,000-13,000 rows a second, so fanning shards
    out would save little; benchmarks/RESULTS.md). Scores go through the run's score cache
    (:func:`score_cache_of`), so re-running the stage after changing only the cut re-cuts the
    cached scores without loading the model."""
    return apply_quality(table, cfg.quality, model_path_of(cfg), cache=score_cache_of(cfg))


def score_cache_of(cfg: PipelineConfig) -> ScoreCache:
    """The pipeline's quality score cache: ``quality_scores/`` beside the teacher's request cache."""
    return ScoreCache(cfg.teacher_cache_dir() / "quality_scores")


def quality_stage_inputs(cfg: PipelineConfig) -> dict | None:
    """What the stage depends on besides its config: the model file's content, so retraining a
    model in place re-runs the stage on resume."""
    if not cfg.quality.enabled or not cfg.quality.model:
        return None
    p = model_path_of(cfg)
    if not p.is_file():
        return {"model_sha256": None}
    return {"model_sha256": model_sha256(p)}



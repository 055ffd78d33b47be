"""What every stage runner shares: the result a runner returns, and a stage's writers and commit.

Each stage writes kept rows to ``<run>/<stage>/`` and dropped rows to ``<run>/rejected/<stage>/``
and commits with a manifest that records the fingerprint of its inputs and the hash of its
config, so a committed stage is skipped on resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dataforge.config import PipelineConfig
from dataforge.records import DROP_FIELDS, samples_to_table, with_drop
from dataforge.store import FileEntry, Run, ShardWriter, input_fingerprint


@dataclass
class StageResult:
    stage: str
    rows_in: int = 0
    rows_kept: int = 0
    rows_dropped: int = 0
    seconds: float = 0.0
    skipped: bool = False
    teacher: dict | None = None
    extra: dict = field(default_factory=dict)
    # why the stage stopped before committing (``{"reason": "budget", ...}``: teacher.budget_usd)
    stopped: dict | None = None

def rejected_schema(schema: pa.Schema) -> pa.Schema:
    for f in DROP_FIELDS:
        if f.name not in schema.names:
            schema = schema.append(f)
    return schema

class StageIO:
    """Writers and the commit for one stage of one run."""

    def __init__(self, run: Run, cfg: PipelineConfig, stage: str, inputs: Sequence[str], config_sections: Sequence[str],
                 extra_config: Any = None):
        self.run, self.cfg, self.stage = run, cfg, stage
        self.inputs = list(inputs)
        self.fingerprint = input_fingerprint(run.committed(s) for s in self.inputs) if self.inputs else "none"
        self.config_hash = cfg.stage_hash(*config_sections, extra=extra_config)

    def done(self) -> bool:
        return self.run.is_done(self.stage, self.fingerprint, self.config_hash)

    def previous_result(self) -> StageResult:
        kept = self.run.committed(self.stage) or {"rows": 0}
        rej = self.run.committed_rejected(self.stage) or {"rows": 0}
        return StageResult(self.stage, rows_in=kept["rows"] + rej["rows"], rows_kept=kept["rows"],
                           rows_dropped=rej["rows"], skipped=True)

    def begin(self) -> None:
        self.run.begin_stage(self.stage)

    def writers(self, shard: int, schema: pa.Schema) -> tuple[ShardWriter, ShardWriter]:
        prefix = f"part-{shard:05d}"
        kept = self.run.shard_writer(self.run.stage_dir(self.stage), prefix=prefix, max_rows=self.cfg.shard_rows,
                                     schema=schema)
        rej = self.run.shard_writer(self.run.rejected_dir(self.stage), prefix=prefix, max_rows=self.cfg.shard_rows,
                                    schema=rejected_schema(schema))
        return kept, rej

    def write_shard(self, shard: int, kept: pa.Table, rejected: pa.Table) -> tuple[list[FileEntry], list[FileEntry]]:
        kw, rw = self.writers(shard, kept.schema)
        kw.write(kept)
        rw.write(rejected)
        return kw.close(), rw.close()

    def commit(self, kept: Sequence[FileEntry], rejected: Sequence[FileEntry], schema: pa.Schema, extra: dict | None = None) -> None:
        self.run.commit_stage(self.stage, kept, rejected, schema, rejected_schema(schema),
                              fingerprint=self.fingerprint, config_hash=self.config_hash, extra=extra)


def drop_table(rows: list[dict], stage: str) -> pa.Table:
    """Rows that carry a ``drop_reason`` key as a rejected table of ``stage``."""
    reasons = [r.pop("drop_reason") for r in rows]
    return with_drop(samples_to_table(rows), stage, reasons)

"""Export the kept samples of a run as a hand-off dataset.

``<run>/export/<name>/`` holds ``train.jsonl`` (one chat sample per line: ``messages`` as TRL's
SFT trainer reads them, plus ``id`` and ``kind``) and/or ``train.parquet`` (the same rows with
their provenance columns), ``checksums.sha256``, a short dataset card ``README.md`` and a
``_manifest.json``. The folder is built under a temporary name and renamed into place, so a
crash never leaves a half-written export visible.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dataforge.records import render_messages
from dataforge.store import FileEntry, Run, sha256_file, write_manifest

PROVENANCE = ["id", "kind", "topic", "audience", "style", "teacher_model", "template", "seed_id",
              "question", "answer", "gold_answer", "votes", "agreement", "run_id"]


def export_table(table: pa.Table, out_dir: Path, formats: Sequence[str], *, title: str = "dataforge export",
                 card_extra: dict | None = None, extra: dict | None = None) -> dict:
    """Write ``table`` (sample rows) as a hand-off dataset at ``out_dir``; returns its manifest."""
    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".tmp-{out_dir.name}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True)
    try:
        rows = table.to_pylist()
        messages = [render_messages(r) for r in rows]
        files: list[Path] = []
        if "jsonl" in formats:
            p = tmp / "train.jsonl"
            with open(p, "w", encoding="utf-8") as f:
                for r, m in zip(rows, messages):
                    f.write(json.dumps({"messages": m, "id": r["id"], "kind": r["kind"]}, ensure_ascii=False) + "\n")
            files.append(p)
        if "parquet" in formats:
            p = tmp / "train.parquet"
            cols = [c for c in PROVENANCE if c in table.column_names]
            out = table.select(cols)
            msg_type = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
            out = out.append_column("messages", pa.array(messages, type=msg_type))
            pq.write_table(out, p, compression="zstd")
            files.append(p)
        entries = [FileEntry(p.name, table.num_rows, p.stat().st_size, sha256_file(p)) for p in files]
        (tmp / "checksums.sha256").write_text("".join(f"{e.sha256}  {e.name}\n" for e in entries))
        kinds: dict[str, int] = {}
        for r in rows:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        card = [f"# {title}", "", f"Rows: {table.num_rows}", "", "| kind | rows |", "|---|---|"]
        card += [f"| {k} | {v} |" for k, v in sorted(kinds.items())]
        card += ["", "Files: " + ", ".join(e.name for e in entries), "",
                 "Each row has `messages` (a list of `{role, content}`), the format TRL's SFT trainer reads.",
                 "", f"Created {datetime.now(timezone.utc).isoformat()}"]
        if card_extra:
            card += ["", "```json", json.dumps(card_extra, indent=2, default=str), "```"]
        (tmp / "README.md").write_text("\n".join(card) + "\n")
        manifest = write_manifest(tmp, entries, table.schema, kind="export", counts=kinds,
                                  **{**(extra or {}), "rows": table.num_rows})
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_run(run: Run, stage: str, name: str, formats: Sequence[str], extra: dict | None = None) -> tuple[Path, dict]:
    """Export the committed rows of ``stage`` in ``run`` as ``<run>/export/<name>``."""
    table = run.read(stage)
    out = run.export_dir(name)
    manifest = export_table(table, out, formats, title=f"dataforge export {name} of run {run.run_id}",
                            card_extra={"run_id": run.run_id, "source_stage": stage}, extra=extra)
    return out, manifest

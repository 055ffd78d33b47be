"""The stage runners: plain functions of a :class:`~dataforge.store.Run` and a config, with no
Prefect in sight (``flows/`` decides how many run at once and where). Which stages exist, in what
order, and how each is applied come from the registry (:mod:`dataforge.stages.registry`).

- :mod:`~dataforge.runner.io` — :class:`StageResult`, :class:`StageIO` (a stage's writers and commit)
- :mod:`~dataforge.runner.generation` — textbooks and cot: ask the teacher, gate, commit
- :mod:`~dataforge.runner.curation` — shard and whole curation stages
- :mod:`~dataforge.runner.dedup` — dedup in parts, out of core (signatures per shard, candidates per band)
- :mod:`~dataforge.runner.runs` — open a run, record results and failures, export, finish
"""

from dataforge.runner.curation import (commit_sharded, curation_inputs, curation_inputs_of, curation_io,
                                       enabled_curation, run_curation_stage, run_sharded, run_sharded_shard, run_whole,
                                       teacher_stage_pending)
from dataforge.runner.dedup import (dedup_band, dedup_bands, dedup_begin, dedup_finish, dedup_io, dedup_plan,
                                   dedup_sign_shard, run_dedup)
from dataforge.runner.generation import (enabled_generation, generation_io, generation_pending, run_cot,
                                         run_textbooks)
from dataforge.runner.io import StageIO, StageResult, drop_table, rejected_schema
from dataforge.runner.runs import finish_run, open_run, record_failure, record_result, run_export, sum_teacher
from dataforge.stages.registry import final_stage

__all__ = ["StageIO", "StageResult", "commit_sharded", "curation_inputs", "curation_inputs_of", "curation_io",
           "dedup_band", "dedup_bands", "dedup_begin", "dedup_finish", "dedup_io", "dedup_plan", "dedup_sign_shard", "drop_table",
           "enabled_curation", "enabled_generation", "final_stage", "finish_run", "generation_io",
           "generation_pending", "open_run", "record_failure", "record_result", "rejected_schema", "run_cot",
           "run_curation_stage", "run_dedup", "run_export", "run_sharded", "run_sharded_shard", "run_textbooks", "run_whole",
           "sum_teacher", "teacher_stage_pending"]

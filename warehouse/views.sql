-- Views over one run. dataforge creates three base relations before this file runs:
--   kept_rows      every kept row of every committed stage, with `stage` (the stage folder)
--   rejected_rows  every dropped row, with `drop_stage` and `drop_reason`
--   stages         one row per stage from run.json: position, stage, status, rows_in,
--                  rows_kept, rows_dropped, seconds, teacher requests and cache hits
-- Everything below is plain DuckDB SQL; add views here and they appear in `dataforge sql`.

-- All kept samples, per stage (filter on `stage`).
CREATE OR REPLACE VIEW samples AS
SELECT * FROM kept_rows;

-- The run's output: the kept rows of the last curation stage.
CREATE OR REPLACE VIEW final AS
SELECT * FROM kept_rows
WHERE stage = (SELECT stage FROM stages WHERE is_final LIMIT 1);

-- Every dropped row with the stage that dropped it and why.
CREATE OR REPLACE VIEW rejections AS
SELECT * FROM rejected_rows;

-- Rows in, kept and dropped at each stage, in pipeline order.
CREATE OR REPLACE VIEW funnel AS
SELECT position, stage, status, rows_in, rows_kept, rows_dropped,
       round(100.0 * rows_kept / nullif(rows_in, 0), 1) AS kept_pct,
       seconds, teacher_requests, teacher_cache_hits
FROM stages
ORDER BY position;

-- Why rows were dropped, most common first.
CREATE OR REPLACE VIEW drop_reasons AS
SELECT drop_stage, drop_reason, count(*) AS rows
FROM rejected_rows
GROUP BY ALL
ORDER BY rows DESC, drop_stage, drop_reason;

-- Samples per stage and kind.
CREATE OR REPLACE VIEW stage_counts AS
SELECT stage, kind, count(*) AS rows
FROM kept_rows
GROUP BY ALL
ORDER BY stage, kind;

-- Drop reasons: which stage dropped how many rows, and why. Dedup's reasons name the row each
-- duplicate was kept against (`near_duplicate_of:<id>`); here they are counted together, per kind
-- of duplicate (per kept row: `dataforge sql "select * from drop_reasons"`).
SELECT drop_stage, regexp_replace(drop_reason, '_of:.*$', '_of:<id>') AS drop_reason, sum(rows) AS rows
FROM drop_reasons
GROUP BY ALL
ORDER BY rows DESC, drop_stage, drop_reason;

-- Funnel: rows in, kept and dropped at each stage.
SELECT stage, status, rows_in, rows_kept, rows_dropped, kept_pct, seconds, teacher_requests, teacher_cache_hits
FROM funnel;

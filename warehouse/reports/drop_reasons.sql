-- Drop reasons: which stage dropped how many rows, and why.
SELECT drop_stage, drop_reason, rows FROM drop_reasons;

-- Quality gates: rows each stage dropped, per reason (details such as the wrong step's excerpt
-- stripped), with the full reason of one example row; `dataforge report --html` shows its text.
SELECT stage, reason, rows, example_id, left(example_reason, 90) AS example_reason
FROM gate_drops
ORDER BY stage, rows DESC, reason;

-- Heuristic rules: rows the heuristics stage dropped, by rule family and the first rule each
-- failed (drop_reason <family>:<rule>, dataforge/curate/heuristics.py), with the share of the
-- rows the stage checked. Families: gopher_quality, gopher_repetition, c4, fineweb_quality.
WITH checked AS (
    SELECT count(*) AS n FROM (
        SELECT stage FROM (SELECT * FROM kept_rows UNION ALL BY NAME
                           SELECT NULL::VARCHAR AS stage, NULL::BOOLEAN AS heur_checked WHERE FALSE)
        WHERE stage = 'heuristics' AND heur_checked
        UNION ALL
        SELECT drop_stage FROM rejected_rows WHERE drop_stage = 'heuristics'
    )
)
SELECT split_part(r.drop_reason, ':', 1) AS family,
       split_part(r.drop_reason, ':', 2) AS rule,
       count(*) AS rows,
       round(100.0 * count(*) / nullif(any_value(c.n), 0), 2) AS pct_of_checked
FROM rejected_rows r CROSS JOIN checked c
WHERE r.drop_stage = 'heuristics'
GROUP BY ALL
ORDER BY rows DESC, family, rule;

-- fastText quality scores (dataforge/curate/quality.py): rows the quality stage scored, kept and
-- dropped, per model and score bin. Bins are 0.1 wide up to 1 (a binary model's probability)
-- and 0.5 wide from 1 to 5 (a rubric model's expected rating); the last bin holds its upper
-- edge. Every bin is listed; a run without the stage shows zeros under a null model.
WITH scored AS (
    SELECT quality_model, quality_score, FALSE AS dropped
    FROM (SELECT * FROM kept_rows UNION ALL BY NAME
          SELECT NULL::VARCHAR AS stage, NULL::DOUBLE AS quality_score, NULL::VARCHAR AS quality_model WHERE FALSE)
    WHERE stage = 'quality' AND quality_score IS NOT NULL
    UNION ALL
    SELECT quality_model, quality_score, TRUE AS dropped
    FROM (SELECT * FROM rejected_rows UNION ALL BY NAME
          SELECT NULL::VARCHAR AS drop_stage, NULL::DOUBLE AS quality_score, NULL::VARCHAR AS quality_model WHERE FALSE)
    WHERE drop_stage = 'quality' AND quality_score IS NOT NULL
),
bins AS (
    SELECT range / 10.0 AS bin_from, (range + 1) / 10.0 AS bin_to FROM range(0, 10)
    UNION ALL SELECT 1.0 + range / 2.0, 1.5 + range / 2.0 FROM range(0, 8)
),
models AS (
    SELECT DISTINCT quality_model FROM scored
    UNION ALL SELECT NULL WHERE NOT EXISTS (SELECT 1 FROM scored)
),
binned AS (
    SELECT quality_model, dropped,
           CASE WHEN quality_score < 1 THEN floor(quality_score * 10) / 10.0
                ELSE least(1.0 + floor((quality_score - 1) * 2) / 2.0, 4.5) END AS bin_from
    FROM scored
)
SELECT m.quality_model, b.bin_from, b.bin_to,
       count(s.bin_from) FILTER (WHERE NOT s.dropped) AS kept,
       count(s.bin_from) FILTER (WHERE s.dropped) AS dropped,
       count(s.bin_from) AS rows
FROM models m CROSS JOIN bins b
LEFT JOIN binned s ON s.quality_model IS NOT DISTINCT FROM m.quality_model AND s.bin_from = b.bin_from
GROUP BY ALL
ORDER BY m.quality_model, b.bin_from;

-- AlpaGasus judge scores (dataforge/select/judge.py): rows the judge stage looked at, kept and
-- dropped, per 0.5-wide score bin (bin 4.5 holds 4.5 <= score < 5.0; bin 5.0 only 5.0), and the
-- failed judgements (no score in the reply, or the teacher failed) as `failed`. Every bin is
-- listed, empty or not; a run without the judge stage shows zeros.
WITH kept AS (
    SELECT judge_score, judge_rubric, FALSE AS dropped
    FROM (SELECT * FROM kept_rows UNION ALL BY NAME
          SELECT NULL::VARCHAR AS stage, NULL::DOUBLE AS judge_score, NULL::VARCHAR AS judge_rubric WHERE FALSE)
    WHERE stage = 'judge'
),
dropped AS (
    SELECT judge_score, judge_rubric, TRUE AS dropped
    FROM (SELECT * FROM rejected_rows UNION ALL BY NAME
          SELECT NULL::VARCHAR AS drop_stage, NULL::DOUBLE AS judge_score, NULL::VARCHAR AS judge_rubric WHERE FALSE)
    WHERE drop_stage = 'judge'
),
judged AS (
    SELECT CASE WHEN judge_score IS NULL THEN 'failed'
                ELSE printf('%.1f', least(floor(judge_score * 2) / 2, 5.0)) END AS score_bin, dropped
    FROM (SELECT * FROM kept UNION ALL SELECT * FROM dropped)
    WHERE judge_rubric IS NOT NULL
),
bins AS (
    SELECT printf('%.1f', range / 2.0) AS score_bin, range AS position FROM range(0, 11)
    UNION ALL SELECT 'failed', 11
)
SELECT b.score_bin,
       count(j.score_bin) FILTER (WHERE NOT j.dropped) AS kept,
       count(j.score_bin) FILTER (WHERE j.dropped) AS dropped,
       count(j.score_bin) AS rows
FROM bins b LEFT JOIN judged j USING (score_bin)
GROUP BY b.score_bin, b.position
ORDER BY b.position;

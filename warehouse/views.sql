-- Views over one run. dataforge creates four base relations before this file runs:
--   kept_rows      every kept row of every committed stage, with `stage` (the stage folder)
--   final_rows     the kept rows of the final stage (stages.is_final) alone, with `stage`
--   rejected_rows  every dropped row, with `drop_stage` and `drop_reason`
--   stages         one row per stage from run.json: position, stage, status, rows_in,
--                  rows_kept, rows_dropped, seconds, teacher requests and cache hits
-- Everything below is plain DuckDB SQL; add views here and they appear in `dataforge sql`.

-- All kept samples, per stage (filter on `stage`).
CREATE OR REPLACE VIEW samples AS
SELECT * FROM kept_rows;

-- The run's output: the kept rows of the final stage (the registry's rule: stages.is_final).
CREATE OR REPLACE VIEW final AS
SELECT * FROM final_rows;

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

-- ---- textbook coverage and diversity (dataforge/generate/textbooks.py) --------------------
-- Every cell of the textbook sampling plan leaves exactly one row in the textbooks stage
-- (kept, or rejected with the reason), carrying its axes: subject, topic, subtopic, audience,
-- style, format, passage_id. `cell_key` follows the cell through later stages (the teacher
-- request's hash; the text's id when there is none). `status`: final, dropped (by a later
-- stage: lost_at, lost_reason), never_produced (the teacher gave nothing), or pending.
CREATE OR REPLACE VIEW textbook_cells AS
WITH planned AS (
    SELECT subject, topic, subtopic, audience, style, format, passage_id, template,
           coalesce(request_hash, id) AS cell_key, NULL::VARCHAR AS generation_error
    FROM kept_rows WHERE stage = 'textbooks' AND kind = 'textbook'
    UNION ALL
    SELECT subject, topic, subtopic, audience, style, format, passage_id, template,
           coalesce(request_hash, id) AS cell_key, drop_reason AS generation_error
    FROM rejected_rows WHERE drop_stage = 'textbooks' AND kind = 'textbook'
),
later_drops AS (
    SELECT coalesce(request_hash, id) AS cell_key, min(drop_stage) AS drop_stage, min(drop_reason) AS drop_reason
    FROM rejected_rows WHERE kind = 'textbook' AND drop_stage <> 'textbooks'
    GROUP BY 1
),
in_final AS (
    SELECT DISTINCT coalesce(request_hash, id) AS cell_key FROM final WHERE kind = 'textbook'
)
SELECT p.subject, p.topic, p.subtopic, p.audience, p.style, p.format, p.passage_id, p.template, p.cell_key,
       CASE WHEN p.generation_error IS NOT NULL THEN 'never_produced'
            WHEN f.cell_key IS NOT NULL THEN 'final'
            WHEN d.cell_key IS NOT NULL THEN 'dropped'
            ELSE 'pending' END AS status,
       CASE WHEN p.generation_error IS NOT NULL THEN 'textbooks'
            WHEN f.cell_key IS NULL THEN d.drop_stage END AS lost_at,
       CASE WHEN p.generation_error IS NOT NULL THEN p.generation_error
            WHEN f.cell_key IS NULL THEN d.drop_reason END AS lost_reason
FROM planned p
LEFT JOIN in_final f ON p.generation_error IS NULL AND f.cell_key = p.cell_key
LEFT JOIN later_drops d ON p.generation_error IS NULL AND d.cell_key = p.cell_key;

-- Planned textbook cells per value of each axis, and what became of them.
CREATE OR REPLACE VIEW textbook_coverage AS
SELECT axis, value,
       count(*) AS planned,
       count(*) FILTER (WHERE status <> 'never_produced') AS produced,
       count(*) FILTER (WHERE status = 'final') AS in_final,
       count(*) FILTER (WHERE status = 'never_produced') AS never_produced,
       count(*) FILTER (WHERE status = 'dropped') AS dropped
FROM (SELECT * FROM textbook_cells
      UNPIVOT INCLUDE NULLS (value FOR axis IN (subject, topic, subtopic, audience, style, format)))
GROUP BY axis, value
ORDER BY list_position(['subject', 'topic', 'subtopic', 'audience', 'style', 'format'], axis),
         planned DESC, value NULLS LAST;

-- Planned textbook cells per pair of values of two axes (the topic levels against audience,
-- style and format, and those three against each other); pairs with an unset axis are left out.
CREATE OR REPLACE VIEW textbook_pair_coverage AS
WITH pairs AS (
    SELECT 'subject' AS axis_a, subject AS value_a, 'audience' AS axis_b, audience AS value_b, status FROM textbook_cells
    UNION ALL SELECT 'subject', subject, 'style', style, status FROM textbook_cells
    UNION ALL SELECT 'subject', subject, 'format', format, status FROM textbook_cells
    UNION ALL SELECT 'topic', topic, 'audience', audience, status FROM textbook_cells
    UNION ALL SELECT 'topic', topic, 'style', style, status FROM textbook_cells
    UNION ALL SELECT 'topic', topic, 'format', format, status FROM textbook_cells
    UNION ALL SELECT 'audience', audience, 'style', style, status FROM textbook_cells
    UNION ALL SELECT 'audience', audience, 'format', format, status FROM textbook_cells
    UNION ALL SELECT 'style', style, 'format', format, status FROM textbook_cells
)
SELECT axis_a, value_a, axis_b, value_b, count(*) AS planned,
       count(*) FILTER (WHERE status = 'final') AS in_final
FROM pairs
WHERE value_a IS NOT NULL AND value_b IS NOT NULL
GROUP BY ALL
ORDER BY axis_a, axis_b, value_a, value_b;

-- Lexical diversity of the run's output: distinct-n (Li et al. 2016) = distinct n-grams /
-- tokens, n-grams within one text, per kind and per value of each textbook axis. Tokens are
-- runs of letters and digits in the lower-cased text (the same RE2 pattern as
-- dataforge/curate/diversity_metrics.py, so both give the same numbers).
CREATE OR REPLACE VIEW lexical_diversity AS
WITH docs AS (
    SELECT row_number() OVER () AS doc, kind, subject, topic, subtopic, audience, style, format,
           regexp_extract_all(lower(text), '[\p{L}\p{N}]+') AS toks
    FROM final
),
grams AS (
    SELECT doc, kind, subject, topic, subtopic, audience, style, format,
           toks[i] AS g1,
           CASE WHEN i + 1 <= len(toks) THEN toks[i] || ' ' || toks[i + 1] END AS g2,
           CASE WHEN i + 2 <= len(toks) THEN toks[i] || ' ' || toks[i + 1] || ' ' || toks[i + 2] END AS g3
    FROM (SELECT *, unnest(range(1, len(toks) + 1)) AS i FROM docs)
),
per_kind AS (
    SELECT 'kind' AS axis, kind AS value, count(DISTINCT doc) AS docs, count(*) AS tokens,
           count(DISTINCT g1) / count(*) AS distinct_1, count(DISTINCT g2) / count(*) AS distinct_2,
           count(DISTINCT g3) / count(*) AS distinct_3
    FROM grams GROUP BY kind
),
per_axis AS (
    SELECT CASE WHEN grouping(subject) = 0 THEN 'subject' WHEN grouping(topic) = 0 THEN 'topic'
                WHEN grouping(subtopic) = 0 THEN 'subtopic' WHEN grouping(audience) = 0 THEN 'audience'
                WHEN grouping(style) = 0 THEN 'style' ELSE 'format' END AS axis,
           CASE WHEN grouping(subject) = 0 THEN subject WHEN grouping(topic) = 0 THEN topic
                WHEN grouping(subtopic) = 0 THEN subtopic WHEN grouping(audience) = 0 THEN audience
                WHEN grouping(style) = 0 THEN style ELSE format END AS value,
           count(DISTINCT doc) AS docs, count(*) AS tokens,
           count(DISTINCT g1) / count(*) AS distinct_1, count(DISTINCT g2) / count(*) AS distinct_2,
           count(DISTINCT g3) / count(*) AS distinct_3
    FROM grams WHERE kind = 'textbook'
    GROUP BY GROUPING SETS ((subject), (topic), (subtopic), (audience), (style), (format))
)
SELECT * FROM (SELECT * FROM per_kind UNION ALL SELECT * FROM per_axis)
ORDER BY list_position(['kind', 'subject', 'topic', 'subtopic', 'audience', 'style', 'format'], axis),
         value NULLS LAST;

-- How the run's textbook sections begin: the first three words, most common first. One
-- opener holding a large share is the repeated framing Cosmopedia warns about.
CREATE OR REPLACE VIEW textbook_openers AS
SELECT array_to_string(regexp_extract_all(lower(text), '[\p{L}\p{N}]+')[1:3], ' ') AS opener,
       count(*) AS rows,
       round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS pct
FROM final
WHERE kind = 'textbook'
GROUP BY 1
ORDER BY rows DESC, opener;

-- ---- quality gates: what each stage dropped, per reason, with one example -----------------
-- `reason` (the macro reason_key) is the drop reason without its details: `wrong_step:<excerpt>` -> wrong_step,
-- `noncompliant:meta_talk:<excerpt>` -> noncompliant:meta_talk, `gopher_quality:min_doc_words`
-- and `c4:min_sentences` stay, `judge:score_2<4.5` -> judge. The example is the row with the smallest id: its id, its
-- full drop reason, and the start of its text (for a CoT sample: the question and rationale).
CREATE OR REPLACE MACRO reason_key(r) AS
    CASE WHEN regexp_full_match(split_part(coalesce(r, ''), ':', 2), '[a-z][a-z0-9_]*')
         THEN regexp_extract(coalesce(r, ''), '^[A-Za-z_][A-Za-z0-9_]*') || ':' || split_part(r, ':', 2)
         ELSE regexp_extract(coalesce(r, ''), '^[A-Za-z_][A-Za-z0-9_]*') END;

CREATE OR REPLACE VIEW gate_drops AS
WITH r AS (
    SELECT drop_stage, drop_reason, id, kind, text FROM rejected_rows
)
SELECT drop_stage AS stage,
       reason_key(drop_reason) AS reason,
       count(*) AS rows,
       arg_min(id, id) AS example_id,
       arg_min(kind, id) AS example_kind,
       arg_min(drop_reason, id) AS example_reason,
       arg_min(left(text, 600), id) AS example_text
FROM r
GROUP BY ALL
ORDER BY stage, rows DESC, reason;

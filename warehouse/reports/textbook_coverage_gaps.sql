-- Textbook coverage gaps: cells of the plan that are not in the output, where and why they were lost.
SELECT lost_at, lost_reason, subject, topic, subtopic, audience, style, format, passage_id
FROM textbook_cells
WHERE status <> 'final'
ORDER BY (SELECT position FROM stages WHERE stage = lost_at) NULLS LAST, lost_reason,
         subject, topic, subtopic, audience, style, format;

-- Textbook coverage: planned cells per value of each axis, and how many reached the output
-- (subtopics are left out here for length: `dataforge sql "select * from textbook_coverage"`).
SELECT axis, value, planned, produced, in_final, never_produced, dropped
FROM textbook_coverage
WHERE axis <> 'subtopic';

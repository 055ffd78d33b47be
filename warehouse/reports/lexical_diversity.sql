-- Lexical diversity of the output: distinct-1/2/3 (Li et al. 2016) per kind and per value of the
-- coarse textbook axes (per topic and subtopic: `dataforge sql "select * from lexical_diversity"`).
-- distinct-n falls as a group grows, so compare groups of similar size (`tokens`).
SELECT axis, value, docs, tokens, round(distinct_1, 3) AS distinct_1, round(distinct_2, 3) AS distinct_2,
       round(distinct_3, 3) AS distinct_3
FROM lexical_diversity
WHERE axis NOT IN ('topic', 'subtopic');

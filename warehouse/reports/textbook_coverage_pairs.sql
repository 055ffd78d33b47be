-- Textbook coverage of pairs of axes: of the value pairs the plan's values allow, how many
-- were planned and how many reached the output; fewest and most output rows per planned pair.
SELECT axis_a, axis_b,
       count(DISTINCT value_a) * count(DISTINCT value_b) AS value_pairs,
       count(*) AS planned_pairs,
       count(*) FILTER (WHERE in_final > 0) AS final_pairs,
       count(DISTINCT value_a) * count(DISTINCT value_b) - count(*) FILTER (WHERE in_final > 0) AS missing_pairs,
       min(in_final) AS final_min,
       max(in_final) AS final_max
FROM textbook_pair_coverage
GROUP BY axis_a, axis_b
ORDER BY list_position(['subject', 'topic', 'audience', 'style'], axis_a),
         list_position(['audience', 'style', 'format'], axis_b);

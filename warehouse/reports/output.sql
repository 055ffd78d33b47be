-- Output: what the run delivers, by kind.
SELECT kind, count(*) AS rows, round(avg(length(text))) AS avg_chars FROM final GROUP BY ALL ORDER BY kind;

{#-
  One family of a staged feature build, over the stored base (a relation named `base`): symbol, ts and the
  family's declared outputs. Not ordered: an ORDER BY here would sort every wide row inside DuckDB (~0.4-1.5 s
  per family on 1M rows); the caller orders the Arrow result by (symbol, ts) instead, and only when the rows did
  not already arrive in that order (warehouse/features/materialize.py). Every family emits exactly one row per
  base row (the staged build checks the row counts before it composes).
  Parameters: family_sql (the rendered family SELECT over `base`), columns (its declared outputs).
-#}
SELECT fam.symbol, fam.ts{% for c in columns %}, fam.{{ c }}{% endfor %}
FROM (
{{ family_sql }}
) AS fam

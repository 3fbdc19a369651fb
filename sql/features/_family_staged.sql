{#-
  One family of a staged feature build, over the stored base (a relation named `base`), in (symbol, ts) order
  so that the families can be put side by side by position. Every family emits exactly one row per base row
  (the staged build checks the row counts before it composes).
  Parameters: family_sql (the rendered family SELECT over `base`), columns (its declared outputs).
-#}
SELECT fam.symbol, fam.ts{% for c in columns %}, fam.{{ c }}{% endfor %}
FROM (
{{ family_sql }}
) AS fam
ORDER BY fam.symbol, fam.ts

{#- The feature projection shared by the single-query and the staged build: the declared outputs in catalog
    order with their declared types, reading feature f from the relation f<family_index>; a double that is not
    finite becomes NULL (the families guard every division already; this is the last line). -#}
{% macro columns(features) -%}
{%- for f in features %},
{%- if f.type == 'int' %}
    CAST(f{{ f.family_index }}.{{ f.name }} AS INTEGER) AS {{ f.name }}
{%- else %}
    CASE WHEN isfinite(CAST(f{{ f.family_index }}.{{ f.name }} AS DOUBLE)) THEN CAST(f{{ f.family_index }}.{{ f.name }} AS DOUBLE) END AS {{ f.name }}
{%- endif %}
{%- endfor %}
{%- endmacro %}

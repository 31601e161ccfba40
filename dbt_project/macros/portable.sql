{#- Warehouse differences in one place (adapter.dispatch): duckdb and postgres variants. -#}

{% macro json_text(column, key) -%}
    {{ adapter.dispatch('json_text', 'governed_marketing')(column, key) }}
{%- endmacro %}
{% macro duckdb__json_text(column, key) -%}
    json_extract_string({{ column }}, '$.{{ key }}')
{%- endmacro %}
{% macro postgres__json_text(column, key) -%}
    ({{ column }}::json ->> '{{ key }}')
{%- endmacro %}

{#- A timestamp string (any ISO 8601 offset) as a naive UTC timestamp, or null when unparseable. -#}
{% macro try_utc_timestamp(text) -%}
    {{ adapter.dispatch('try_utc_timestamp', 'governed_marketing')(text) }}
{%- endmacro %}
{% macro duckdb__try_utc_timestamp(text) -%}
    cast(try_cast({{ text }} as timestamptz) at time zone 'UTC' as timestamp)
{%- endmacro %}
{% macro postgres__try_utc_timestamp(text) -%}
    case when {{ text }} ~ '^\d{4}-\d{2}-\d{2}' then ({{ text }})::timestamptz at time zone 'UTC' end
{%- endmacro %}

{#- An all-digits id as a number (for "highest contact_id"), else null. -#}
{% macro numeric_id(column) -%}
    {{ adapter.dispatch('numeric_id', 'governed_marketing')(column) }}
{%- endmacro %}
{% macro duckdb__numeric_id(column) -%}
    case when regexp_full_match({{ column }}, '[0-9]{1,18}') then cast({{ column }} as bigint) end
{%- endmacro %}
{% macro postgres__numeric_id(column) -%}
    case when {{ column }} ~ '^[0-9]{1,18}$' then cast({{ column }} as bigint) end
{%- endmacro %}

{% macro short_hash(expression) -%}
    substr(md5({{ expression }}), 1, 12)
{%- endmacro %}

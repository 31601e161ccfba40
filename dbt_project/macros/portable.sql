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
{#-
    Postgres has no try_cast: the text is cast only when it has the shape of a real timestamp (month,
    day, hour and minute ranges, day within its month; nested CASEs because AND does not guarantee
    evaluation order), so an unreadable value is null as on DuckDB instead of failing the build.
    A zone-less value is UTC (not the session TimeZone).
-#}
{% macro postgres__try_utc_timestamp(text) -%}
    {%- set day = "[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])" -%}
    {%- set time = "[T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?" -%}
    {%- set offset = " *([Zz]|[+-](0[0-9]|1[0-5])(:?[0-5][0-9])?)" -%}
    case
        when {{ text }} ~ '^{{ day }}({{ time }}({{ offset }})?)?$' then
            case
                when cast(substr({{ text }}, 9, 2) as integer) <= extract(day from (
                    make_date(cast(substr({{ text }}, 1, 4) as integer), cast(substr({{ text }}, 6, 2) as integer), 1)
                    + interval '1 month' - interval '1 day'
                )) then
                    case
                        when {{ text }} ~ '{{ time }}{{ offset }}$'
                            then cast({{ text }} as timestamptz) at time zone 'UTC'
                        else cast({{ text }} as timestamp)
                    end
            end
    end
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

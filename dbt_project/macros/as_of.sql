{#-
    The run's as-of time as a naive UTC timestamp: var('as_of') when given (ISO 8601; any offset is
    converted to UTC, a zone-less value is UTC), else now.
-#}
{% macro as_of() -%}
    {%- if var('as_of', none) -%}
        {{ adapter.dispatch('utc_timestamp_literal', 'governed_marketing')(var('as_of')) }}
    {%- else -%}
        {{ adapter.dispatch('utc_now', 'governed_marketing')() }}
    {%- endif -%}
{%- endmacro %}

{% macro default__utc_timestamp_literal(text) -%}
    cast(cast('{{ text }}' as timestamptz) at time zone 'UTC' as timestamp)
{%- endmacro %}

{% macro postgres__utc_timestamp_literal(text) -%}
    (timestamptz '{{ text }}' at time zone 'UTC')
{%- endmacro %}

{% macro default__utc_now() -%}
    cast(current_timestamp at time zone 'UTC' as timestamp)
{%- endmacro %}

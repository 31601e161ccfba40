{#- The run's as-of time as a UTC timestamp: var('as_of') when given, else now. -#}
{% macro as_of() -%}
    {%- if var('as_of', none) -%}
        cast('{{ var("as_of") | replace("Z", "") | replace("+00:00", "") }}' as timestamp)
    {%- else -%}
        {{ adapter.dispatch('utc_now', 'governed_marketing')() }}
    {%- endif -%}
{%- endmacro %}

{% macro default__utc_now() -%}
    cast(current_timestamp at time zone 'UTC' as timestamp)
{%- endmacro %}

{#-
    Keyed HMAC-SHA256 of a normalized email, as 64 hex characters.
    The key is never written into SQL: on DuckDB the gmp_pseudonym() function is registered by the
    governed_marketing.dbt_duckdb_plugin from GMP_PSEUDONYM_KEY; on Postgres it is the session
    setting gmp.pseudonym_key, set on the connection (pgcrypto's hmac).
-#}
{% macro pseudonymize(column) -%}
    {{ adapter.dispatch('pseudonymize', 'governed_marketing')(column) }}
{%- endmacro %}

{% macro duckdb__pseudonymize(column) -%}
    gmp_pseudonym({{ column }})
{%- endmacro %}

{% macro postgres__pseudonymize(column) -%}
    encode(hmac(convert_to({{ column }}, 'UTF8'), convert_to(current_setting('gmp.pseudonym_key'), 'UTF8'), 'sha256'), 'hex')
{%- endmacro %}

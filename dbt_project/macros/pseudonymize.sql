{#-
    Keyed HMAC-SHA256 of a normalized email, as 64 hex characters.
    The key is never written into SQL: on DuckDB the gmp_pseudonym() function is registered by the
    governed_marketing.dbt_duckdb_plugin from GMP_PSEUDONYM_KEY; on Postgres it is the SECURITY
    DEFINER function gmp_private.pseudonym(), installed by governed_marketing.warehouse.postgres
    before dbt runs (pgcrypto's hmac over a key table only the loading role can read; a session
    or database setting would let any model select the key itself).
-#}
{% macro pseudonymize(column) -%}
    {{ adapter.dispatch('pseudonymize', 'governed_marketing')(column) }}
{%- endmacro %}

{% macro duckdb__pseudonymize(column) -%}
    gmp_pseudonym({{ column }})
{%- endmacro %}

{% macro postgres__pseudonymize(column) -%}
    gmp_private.pseudonym({{ column }})
{%- endmacro %}

{#-
    Runs before every dbt command (on-run-start): fails the run, naming the model and column, when
    a declared column carries no meta.pii classification (direct | quasi | none), or when a model
    tagged `vendor_payload` declares a `direct` column. The analyst hears it on the first
    `dbt build`, before anything is materialized. tests/dbt also checks the built catalog.
-#}
{% macro check_pii_classification() %}
    {%- if execute -%}
        {%- set problems = [] -%}
        {%- set classes = ['direct', 'quasi', 'none'] -%}
        {%- for node in graph.nodes.values() | list + graph.sources.values() | list -%}
            {%- if node.resource_type in ['model', 'seed', 'snapshot', 'source'] -%}
                {%- for column in node.columns.values() -%}
                    {%- set pii = (column.meta or {}).get('pii') -%}
                    {%- if pii not in classes -%}
                        {%- do problems.append(
                            node.unique_id ~ '.' ~ column.name ~ ': meta.pii is ' ~ (pii or 'missing')
                            ~ ' (expected direct, quasi or none)'
                        ) -%}
                    {%- elif pii == 'direct' and 'vendor_payload' in (node.config.tags or []) -%}
                        {%- do problems.append(
                            node.unique_id ~ '.' ~ column.name ~ ': a direct identifier in a vendor payload model'
                        ) -%}
                    {%- endif -%}
                {%- endfor -%}
            {%- endif -%}
        {%- endfor -%}
        {%- if problems -%}
            {{ exceptions.raise_compiler_error(
                'Personal-data classification check failed:\n  ' ~ problems | join('\n  ')
            ) }}
        {%- endif -%}
    {%- endif -%}
{% endmacro %}

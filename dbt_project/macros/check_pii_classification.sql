{#-
    Runs before every dbt command (on-run-start): fails the run, naming the model and column, when
    a declared column carries no meta.pii classification (direct | quasi | none), when a model
    tagged `vendor_payload` declares a `direct` column, or when a purpose allow-lists a direct
    identifier (governance.purpose_fields: a column classified `direct`, or a source's subject key).
    The analyst hears it on the first `dbt build`, before anything is materialized. Only this
    project's nodes are checked: an installed package classifies its columns its own way (or not).
    tests/dbt also checks the built catalog.
-#}
{% macro check_pii_classification() %}
    {%- if execute -%}
        {%- set problems = [] -%}
        {%- set classes = ['direct', 'quasi', 'none'] -%}
        {%- set direct = [] -%}
        {%- for node in graph.nodes.values() | list + graph.sources.values() | list -%}
            {%- if node.resource_type in ['model', 'seed', 'snapshot', 'source'] and node.package_name == project_name -%}
                {%- if node.resource_type == 'source' and (node.meta or {}).get('subject_column') -%}
                    {%- do direct.append(node.meta.subject_column | lower) -%}
                {%- endif -%}
                {%- for column in node.columns.values() -%}
                    {%- set pii = (column.meta or {}).get('pii') -%}
                    {%- if pii == 'direct' -%}{%- do direct.append(column.name | lower) -%}{%- endif -%}
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
        {%- set fields = adapter.get_relation(database=target.database, schema='governance', identifier='purpose_fields') -%}
        {%- if fields is not none -%}
            {%- for row in run_query('select purpose_id, field_name from ' ~ fields ~ ' order by 1, 2') -%}
                {%- if (row[1] | trim | lower) in direct -%}
                    {%- do problems.append(
                        'purposes.' ~ row[0] ~ '.fields: ' ~ row[1] ~ ' is a direct identifier; a purpose may not allow-list it'
                    ) -%}
                {%- endif -%}
            {%- endfor -%}
        {%- endif -%}
        {%- if problems -%}
            {{ exceptions.raise_compiler_error(
                'Personal-data classification check failed:\n  ' ~ problems | join('\n  ')
            ) }}
        {%- endif -%}
    {%- endif -%}
{% endmacro %}

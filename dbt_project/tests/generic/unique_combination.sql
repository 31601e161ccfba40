{#- The columns together identify a row (dbt_utils' unique_combination_of_columns, which the hub cannot deliver here). -#}
{% test unique_combination(model, columns) %}

select
    {{ columns | join(', ') }},
    count(*) as copies

from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1

{% endtest %}

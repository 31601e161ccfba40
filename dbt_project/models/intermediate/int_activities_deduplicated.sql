-- Every activity event ever loaded, once per activity_id. Incremental like the consent history;
-- erasure deletes a person's rows here by contact_id (meta.subject_column).
{{
    config(
        materialized='incremental',
        unique_key='activity_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
    )
}}

with

activities as (

    select * from {{ ref('stg_crm__activities') }}
    {% if is_incremental() %}
        where load_id not in (select distinct this.load_id from {{ this }} as this)
    {% endif %}

),

deduplicated as (

    select
        *,
        row_number() over (partition by activity_id order by occurred_at asc) as activity_copy

    from activities

),

final as (

    select
        activity_id,
        contact_id,
        activity_type,
        product_category,
        amount,
        occurred_at,
        load_id

    from deduplicated
    where activity_copy = 1

)

select * from final

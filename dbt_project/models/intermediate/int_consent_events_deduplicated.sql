-- Every consent event ever loaded, once per event_id (a duplicated event_id counts once).
-- Incremental: each run adds only the rows of CRM loads not seen yet, so the history grows without
-- a full rebuild. Erasure deletes a person's rows here by contact_id (meta.subject_column).
{{
    config(
        materialized='incremental',
        unique_key='event_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
    )
}}

with

events as (

    select * from {{ ref('stg_crm__consent_events') }}
    {% if is_incremental() %}
        where
            consent_action in ('grant', 'withdraw')
            and load_id not in (select distinct this.load_id from {{ this }} as this)
    {% else %}
        where consent_action in ('grant', 'withdraw')
    {% endif %}

),

deduplicated as (

    select
        *,
        row_number() over (
            partition by event_id order by occurred_at asc, consent_action desc
        ) as event_copy

    from events

),

final as (

    select
        event_id,
        contact_id,
        consent_purpose,
        consent_action,
        consent_source,
        notice_version,
        occurred_at,
        load_id

    from deduplicated
    where event_copy = 1

)

select * from final

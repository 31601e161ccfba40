with

source as (

    select * from {{ source('crm', 'crm_consent_events') }}

),

renamed as (

    select
        ---------- ids
        event_id,
        contact_id,
        ---------- strings
        lower(trim(purpose)) as consent_purpose,
        lower(trim(action)) as consent_action,
        source as consent_source,
        notice_version,
        ---------- timestamps
        occurred_at,
        ---------- lineage
        load_id

    from source

)

select * from renamed

with

source as (

    select * from {{ source('crm', 'crm_activity') }}

),

renamed as (

    select
        ---------- ids
        event_id as activity_id,
        contact_id,
        ---------- strings
        event_type as activity_type,
        product_category,
        ---------- numerics
        amount,
        ---------- timestamps
        occurred_at,
        ---------- lineage
        load_id

    from source

)

select * from renamed

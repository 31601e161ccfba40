with

source as (

    select * from {{ source('crm', 'crm_dsr_requests') }}

),

renamed as (

    select
        ---------- ids
        request_id,
        email_normalized as email,
        ---------- strings
        request_type,
        details,
        channel,
        ---------- timestamps
        received_at

    from source

)

select * from renamed

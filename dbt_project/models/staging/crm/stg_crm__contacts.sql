with

source as (

    select * from {{ source('crm', 'crm_contacts') }}

),

renamed as (

    select
        ---------- ids
        contact_id,
        email_normalized as email,
        ---------- identity
        first_name,
        last_name,
        phone,
        birth_date,
        ---------- attributes
        country,
        language,
        city,
        lifecycle_stage,
        interests,
        nullif(trim(split_part(interests, ';', 1)), '') as primary_interest,
        notes,
        ---------- timestamps
        created_at,
        updated_at

    from source

)

select * from renamed

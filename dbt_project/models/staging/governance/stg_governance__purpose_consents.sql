with

source as (

    select * from {{ source('governance', 'purpose_consents') }}

),

renamed as (

    select
        purpose_id,
        consent_purpose

    from source

)

select * from renamed

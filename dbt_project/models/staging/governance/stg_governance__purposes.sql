with

source as (

    select * from {{ source('governance', 'purposes') }}

),

renamed as (

    select
        purpose_id,
        lawful_basis,
        consent_max_age_days,
        dpia_required,
        dpia_reference

    from source

)

select * from renamed

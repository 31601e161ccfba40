with

source as (

    select * from {{ source('governance', 'purpose_fields') }}

),

renamed as (

    select
        purpose_id,
        field_name

    from source

)

select * from renamed

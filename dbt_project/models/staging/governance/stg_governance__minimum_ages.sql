with

source as (

    select * from {{ source('governance', 'minimum_ages') }}

),

renamed as (

    select
        country,
        minimum_age

    from source

)

select * from renamed

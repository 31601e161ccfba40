with

source as (

    select * from {{ source('governance', 'age_policy') }}

),

renamed as (

    select
        default_minimum_age,
        include_unknown_age

    from source

)

select * from renamed

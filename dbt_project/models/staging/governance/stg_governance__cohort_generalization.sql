with

source as (

    select * from {{ source('governance', 'cohort_generalization') }}

),

renamed as (

    select
        attribute,
        drop_rank

    from source

)

select * from renamed

"""The erasure scan's candidates cut from each row's joined text: the oracle of DuckDB's per-cell scan.

Production cuts tokens from each distinct cell value (`DuckDBWarehouse.rows_mentioning`); this is
the plain row-by-row version it replaced, kept only so that tests can check the two find the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping

from governed_marketing.warehouse.duckdb_file import DuckDBWarehouse


def rows_mentioning_by_row_text(
    conn: DuckDBWarehouse, relation: str, text_sql: str, select_sql: str, patterns: Mapping[str, str], *, names: bool
) -> list[tuple]:
    """(rowid, *selected values) of the rows whose lower-cased text holds a needle's token."""
    names_cte = (
        f"""
        union
        select w.rid from (select rid, unnest(regexp_extract_all(txt, '{patterns["word"]}')) as tok from rows_) w
        join scan_names n on w.tok = n.last_key
        join rows_ r on r.rid = w.rid
        where contains(r.txt, n.first_key)
        """
        if names
        else ""
    )
    candidates = conn.raw.execute(
        f"""
        with rows_ as materialized (select rowid as rid, {text_sql} as txt from {relation}),
        email_tokens as (
            select rid, unnest(regexp_extract_all(txt, '{patterns["email"].replace("'", "''")}')) as tok from rows_
        ),
        phone_tokens as (
            select rid, regexp_replace(unnest(regexp_extract_all(txt, '{patterns["phone"]}')), '[^0-9]', '', 'g')
                as tok
            from rows_
        )
        select rid from email_tokens where rtrim(tok, '.') in (select email from scan_emails)
        union
        select rid from phone_tokens
        where (case when tok like '00%' then substr(tok, 3) else tok end) in (select digits from scan_phones)
        {names_cte}
        """
    ).fetchall()
    if not candidates:
        return []
    rowids = [row[0] for row in candidates]
    return conn.raw.execute(
        f"select rowid, {select_sql} from {relation} where rowid in (select unnest(?))", [rowids]
    ).fetchall()

"""What every Warehouse implementation must do alike: run by tests/unit/warehouse (DuckDB) and
tests/postgres/test_warehouse_on_postgres.py (Postgres), so the two engines cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest
from governed_marketing.policy import Policy
from governed_marketing.privacy.scan import _SQL_EMAIL, _SQL_PHONE, _SQL_WORD
from governed_marketing.warehouse import Warehouse, schema, table_exists
from governed_marketing.warehouse.governance import VERSION_TABLE, write_governance_tables

PERSON = "ada.contract@warehouse-test.example"


def _items(conn: Warehouse) -> None:
    conn.execute("create schema if not exists contract").fetchall()
    conn.execute("drop table if exists contract.items").fetchall()
    conn.execute("create table contract.items (id integer primary key, name varchar, notes varchar)").fetchall()


def check_parameters_and_counts(conn: Warehouse) -> None:
    _items(conn)
    assert conn.execute("insert into contract.items values (?, ?, ?)", [1, "one", "5% off"]).fetchall() == [(1,)]
    conn.execute("insert into contract.items values (?, ?, ?)", (2, "two", None)).fetchall()
    assert conn.execute("update contract.items set notes = 'x' where id > ?", [0]).fetchall() == [(2,)]
    rows = conn.execute("select id, name from contract.items where name = $name or id = $id", {"name": "one", "id": 2})
    assert sorted(rows.fetchall()) == [(1, "one"), (2, "two")]
    frame = conn.execute("select id, name from contract.items where name like 'o%' order by id").df()
    assert list(frame.columns) == ["id", "name"] and frame["name"].tolist() == ["one"]
    assert conn.execute("select id from contract.items where id = ?", [3]).fetchone() is None


def check_temp_tables_join(conn: Warehouse) -> None:
    _items(conn)
    conn.execute("insert into contract.items values (1, 'one', null), (2, 'two', null)").fetchall()
    conn.temp_table("wanted", pd.DataFrame({"id": [2, 3]}))
    conn.temp_table("wanted", pd.DataFrame({"id": [1]}))  # replaces the earlier one
    assert conn.execute("select i.name from contract.items i join wanted w using (id)").fetchall() == [("one",)]


def check_replace_table_keeps_types_and_values(conn: Warehouse) -> None:
    conn.execute("create schema if not exists contract").fetchall()
    frame = pd.DataFrame({"k": [1, 2], "flag": [True, False], "ratio": [0.5, 1.5], "label": ["a", None]})
    assert conn.replace_table("contract", "policyish", frame) == 2
    assert conn.replace_table("contract", "policyish", frame.head(1)) == 1
    assert conn.execute("select k, flag, ratio, label from contract.policyish").fetchall() == [(1, True, 0.5, "a")]


def check_transaction_is_all_or_nothing(conn: Warehouse) -> None:
    _items(conn)
    with pytest.raises(RuntimeError, match="stop"), conn.transaction():
        conn.execute("insert into contract.items values (1, 'one', null)").fetchall()
        raise RuntimeError("stop")
    assert conn.execute("select count(*) from contract.items").fetchall() == [(0,)]
    with conn.transaction():
        conn.execute("insert into contract.items values (1, 'one', null)").fetchall()
    assert conn.execute("select count(*) from contract.items").fetchall() == [(1,)]


def check_row_ids_address_rows(conn: Warehouse) -> None:
    _items(conn)
    conn.execute("insert into contract.items values (1, 'one', null), (2, 'two', null)").fetchall()
    (rid,) = conn.execute(f"select {conn.row_id('i')} from contract.items i where id = 2").fetchone()
    conn.execute(f"update contract.items set notes = 'seen' where {conn.row_id()} = ?", [rid]).fetchall()
    assert conn.execute("select id from contract.items where notes = 'seen'").fetchall() == [(2,)]


def check_rows_mentioning_finds_the_person(conn: Warehouse) -> None:
    _items(conn)
    conn.execute(
        "insert into contract.items values (1, 'one', ?), (2, 'two', 'nobody here'), (3, 'three', ?)",
        [f"write to {PERSON.upper()} soon", "call Ada Lovelace on +44 20 7946 0018"],
    ).fetchall()
    conn.temp_table("scan_emails", pd.DataFrame({"email": [PERSON]}, dtype="string"))
    conn.temp_table("scan_phones", pd.DataFrame({"digits": ["442079460018"]}, dtype="string"))
    conn.temp_table("scan_names", pd.DataFrame({"first_key": ["ada"], "last_key": ["lovelace"]}, dtype="string"))
    patterns = {"email": _SQL_EMAIL, "phone": _SQL_PHONE, "word": _SQL_WORD}
    text = "lower(concat_ws(chr(31), name::varchar, notes::varchar))"
    columns = ["name", "notes"]
    rows = conn.rows_mentioning('"contract"."items"', text, "name::varchar", patterns, names=True, columns=columns)
    assert sorted(values for _rid, *values in rows) == [["one"], ["three"]]
    without_names = conn.rows_mentioning(
        '"contract"."items"', text, "name::varchar", patterns, names=False, columns=columns
    )
    assert len(without_names) >= 1 and ["one"] in [values for _rid, *values in without_names]


#: (id, contact_id, first_name, last_name, email, email_normalized, phone, notes, meta): who is found where.
_SCAN_ROWS = [
    (
        1,
        "c1",
        "Ada",
        "Lovelace",
        "Ada.Lovelace@Engine.example",
        "ada.lovelace@engine.example",
        "+44 20 7946 0000",
        None,
        None,
    ),  # her own row: every kind
    (
        2,
        "c2",
        "Ben",
        "Other",
        "ben@other.example",
        "ben@other.example",
        None,
        "forwarded from ADA.LOVELACE@Engine.example.",
        None,
    ),  # an email in someone else's notes
    (
        3,
        "c3",
        "Cy",
        "Other",
        "cy@other.example",
        "cy@other.example",
        None,
        "call her on 00 44 20 7946 0000 after six",
        None,
    ),  # a phone, 00 and spaces
    (4, "c4", "Di", "Other", "di@other.example", "di@other.example", None, "Met Ada Lovelace at the fair", None),
    (5, None, "Ada", "Lovelace", None, None, None, None, None),  # a row that says nobody's: her name counts
    (
        6,
        "c6",
        "Grace",
        "Hopper",
        "grace@other.example",
        "grace@other.example",
        None,
        "a lovelace-themed party",
        None,
    ),  # her last name, not her first: nobody
    (
        7,
        "c7",
        "Ada",
        "Lovelace",
        "ada.namesake@other.example",
        "ada.namesake@other.example",
        None,
        None,
        None,
    ),  # a namesake's own row: theirs
    (
        8,
        "c8",
        "Ed",
        "Other",
        "ed@other.example",
        "ed@other.example",
        None,
        None,
        '{"tel": "+44 (20) 7946-0000"}',
    ),  # a phone in a JSON text column, other separators
    (
        9,
        "c9",
        "Flo",
        "Other",
        "flo@other.example",
        "flo@other.example",
        None,
        "Grüße an Zoë Müller-Lüdenscheidt",
        None,
    ),  # a non-ASCII name in free text
    (
        10,
        "c10",
        "Gil",
        "Other",
        "gil@other.example",
        "gil@other.example",
        "+44 20 7946 0000",
        None,
        None,
    ),  # her phone as someone else's own number: theirs
]


def check_scan_tables_finds_mentions_in_any_cell(conn: Warehouse) -> None:
    """The erasure scan (privacy.scan.scan_tables) finds an email, a phone (any separators, 00 or +)
    and a full name in any text cell, also in someone else's free text, and nothing in namesakes' rows."""
    from governed_marketing.privacy.scan import Identity, Matcher, scan_tables

    conn.execute("create schema if not exists scanprobe").fetchall()
    conn.execute("drop table if exists scanprobe.people").fetchall()
    conn.execute(
        "create table scanprobe.people (id integer, contact_id varchar, first_name varchar, last_name varchar,"
        " email varchar, email_normalized varchar, phone varchar, notes varchar, meta varchar)"
    ).fetchall()
    for row in _SCAN_ROWS:
        conn.execute("insert into scanprobe.people values (?, ?, ?, ?, ?, ?, ?, ?, ?)", list(row)).fetchall()
    ada = Identity("r-ada", emails={"ada.lovelace@engine.example"}, phones={"+44 20 7946 0000"},
                   names={("Ada", "Lovelace")}, contact_ids={"c1"})  # fmt: skip
    zoe = Identity("r-zoe", emails={"zoe@elsewhere.example"}, names={("Zoë", "Müller-Lüdenscheidt")})
    try:
        found = scan_tables(conn, Matcher([ada, zoe]))
        hits = {}
        for hit in found.hits:
            if (hit.schema, hit.table) == ("scanprobe", "people"):
                (row_id,) = conn.execute(
                    f"select id from scanprobe.people where {conn.row_id()} = ?", [hit.rowid]
                ).fetchone()
                hits[row_id] = {ref: sorted(kinds) for ref, kinds in hit.refs.items()}
        assert hits == {
            1: {"r-ada": ["email", "name", "phone"]},
            2: {"r-ada": ["email", "name"]},  # her name is in her email, and no other email is there
            3: {"r-ada": ["phone"]},
            4: {"r-ada": ["name"]},
            5: {"r-ada": ["name"]},
            8: {"r-ada": ["phone"]},
            9: {"r-zoe": ["name"]},
        }
        # The re-check after redaction scans only the tables that held hits (on Postgres a redacted row moves).
        only = scan_tables(conn, Matcher([ada, zoe]), only={("scanprobe", "people")})
        assert only.tables == 1
        assert sorted(hit.rowid for hit in only.hits) == sorted(
            hit.rowid for hit in found.hits if (hit.schema, hit.table) == ("scanprobe", "people")
        )
    finally:
        conn.execute("drop table scanprobe.people").fetchall()


def check_schema_is_ensured_once(conn: Warehouse) -> None:
    """Every raw and ops table is there after an open for writing, and the applied DDL is recorded."""
    schema.ensure(conn)
    for statement in schema.DDL.split(";"):
        words = statement.split()
        if words[:5] == ["create", "table", "if", "not", "exists"]:
            name = words[5].split("(")[0]
            assert table_exists(conn, *name.split(".")), name
    assert conn.execute("select sha256 from ops.warehouse_schema").fetchall() == [(schema.SCHEMA_SHA256,)]


def check_governance_written_when_the_policy_changes(
    conn: Warehouse, policy: Policy, table_oid: Callable[[Warehouse, str, str], int]
) -> None:
    write_governance_tables(conn, policy)
    first = table_oid(conn, "governance", "cohort_policy")
    write_governance_tables(conn, policy)
    assert table_oid(conn, "governance", "cohort_policy") == first, "same policy: the tables were rewritten"
    changed = policy.model_copy(update={"cohorts": policy.cohorts.model_copy(update={"k": policy.cohorts.k + 1})})
    write_governance_tables(conn, changed)
    assert conn.execute("select k from governance.cohort_policy").fetchall() == [(policy.cohorts.k + 1,)]
    assert len(conn.execute(f"select sha256 from governance.{VERSION_TABLE}").fetchall()) == 1


CHECKS = [
    check_parameters_and_counts,
    check_temp_tables_join,
    check_replace_table_keeps_types_and_values,
    check_transaction_is_all_or_nothing,
    check_row_ids_address_rows,
    check_rows_mentioning_finds_the_person,
    check_scan_tables_finds_mentions_in_any_cell,
    check_schema_is_ensured_once,
]

"""The table scan's per-cell candidates (DuckDB `rows_mentioning`) are the row-text ones (the oracle).

The per-cell path cuts tokens out of each distinct cell value instead of each row's joined text;
it must find exactly the rows the row-text path finds, whatever the cells hold: identifiers split
over cells, separators, chr(31) inside a cell, non-ASCII words, JSON, NULLs.
"""

from __future__ import annotations

import random
from pathlib import Path

from governed_marketing.privacy.scan import _SQL_EMAIL, _SQL_PHONE, _SQL_WORD, Identity, Matcher
from governed_marketing.warehouse import connect

from tests.support.row_text_scan import rows_mentioning_by_row_text

_PEOPLE = [
    Identity("r1", emails={"ada.lovelace@engine.example"}, phones={"+44 20 7946 0000"}, names={("Ada", "Lovelace")}),
    Identity("r2", emails={"zoe@elsewhere.example"}, phones={"030 1234567"}, names={("Zoë", "Müller-Lüdenscheidt")}),
]
_PIECES = [
    "ada.lovelace@engine.example", "ADA.Lovelace@Engine.Example.", "x.ada.lovelace@engine.examples", "ada",
    "lovelace", "Ada Lovelace", "Lovelace, Ada", "zoë", "lüdenscheidt", "müller", "Zoë Müller-Lüdenscheidt",
    "zoe@elsewhere.example", "+44 20 7946 0000", "0044 (20) 7946-0000", "442079460000", "4420 7946", "0000",
    "030 1234567", "0301234567", "00301234567", "1234567", " ", ".", "-", "@", "(", ")", "/", ",", "\x1f", "\n",
    "note", "call", "mail", "42", "7", "é", "_", "{\"tel\": \"", "\"}",
]  # fmt: skip


def _cell(rng: random.Random) -> str | None:
    if rng.random() < 0.15:
        return None
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 6)))


def test_per_cell_candidates_are_the_row_text_candidates(tmp_path: Path) -> None:
    rng = random.Random(16)
    columns = ["a", "b", "c", "d"]
    with connect(tmp_path / "warehouse.duckdb") as conn:
        conn.execute("create table ops.scan_probe (a varchar, b varchar, c varchar, d varchar)").fetchall()
        rows = [[_cell(rng) for _ in columns] for _ in range(3000)]
        conn.executemany("insert into ops.scan_probe values (?, ?, ?, ?)", rows)
        for name, frame in Matcher(_PEOPLE).sql_needles().items():
            conn.temp_table(name, frame)
        patterns = {"email": _SQL_EMAIL, "phone": _SQL_PHONE, "word": _SQL_WORD}
        text = "lower(concat_ws(chr(31), " + ", ".join(f'"{c}"::varchar' for c in columns) + "))"
        select = ", ".join(f'"{c}"::varchar' for c in columns)
        for names in (True, False):
            by_row = rows_mentioning_by_row_text(conn, '"ops"."scan_probe"', text, select, patterns, names=names)
            by_cell = conn.rows_mentioning('"ops"."scan_probe"', text, select, patterns, names=names, columns=columns)
            assert sorted(by_cell) == sorted(by_row)
            assert 100 < len(by_row) < 3000  # the pieces make both hits and misses


def test_no_candidates_without_hits(tmp_path: Path) -> None:
    with connect(tmp_path / "warehouse.duckdb") as conn:
        conn.execute("create table ops.scan_probe (a varchar, b varchar)").fetchall()
        conn.execute("insert into ops.scan_probe values ('nobody', 'here'), (null, '+49 30 9999999')").fetchall()
        for name, frame in Matcher(_PEOPLE).sql_needles().items():
            conn.temp_table(name, frame)
        patterns = {"email": _SQL_EMAIL, "phone": _SQL_PHONE, "word": _SQL_WORD}
        text = "lower(concat_ws(chr(31), a::varchar, b::varchar))"
        assert conn.rows_mentioning('"ops"."scan_probe"', text, "a", patterns, names=True, columns=["a", "b"]) == []
        assert not conn.execute("select * from duckdb_tables() where table_name = 'scan_cell_hits'").fetchall()


def test_live_values_are_the_strings_some_live_row_still_holds(tmp_path: Path) -> None:
    """A remnant in the database file's bytes is forgiven only when a live row rightly holds it."""
    from governed_marketing.privacy.scan import live_values

    with connect(tmp_path / "warehouse.duckdb") as conn:
        conn.execute("create table ops.scan_probe (a varchar, b varchar)").fetchall()
        conn.execute("create table ops.other_probe (n integer, c varchar)").fetchall()
        conn.execute("insert into ops.scan_probe values ('Shared line +44 20 7946 0000', null)").fetchall()
        conn.execute("insert into ops.other_probe values (1, 'Ada.Lovelace@Engine.example')").fetchall()
        wanted = {"+44 20 7946 0000", "ADA.LOVELACE@engine.example", "gone@nowhere.example", "7946 0000 x"}
        assert live_values(conn, wanted) == {"+44 20 7946 0000", "ada.lovelace@engine.example"}
        assert live_values(conn, []) == set()

"""The reader's two paths meet at the right lines: plain lines split in columns, the rest by the csv module.

A plain line (no quote, the header's number of commas) is split without the csv module; anything
else is read by it, and reading hands back to the split only between records. These cases sit on
the seams: a quoted record over two lines, an unterminated quote in the middle of plain lines, a
blank line, a wrong field count, a quoted cell on an otherwise plain line, CRLF endings.
"""

from __future__ import annotations

from pathlib import Path

from governed_marketing.crm import contract
from governed_marketing.crm.ingest import read_export_file

HEADER = "event_id,contact_id,event_type,product_category,amount,occurred_at"
AT = "2026-01-01T00:00:00Z"


def _read(tmp_path: Path, lines: list[str], ending: str = "\n"):
    path = tmp_path / "activity.csv"
    path.write_bytes(ending.join([HEADER, *lines]).encode() + ending.encode())
    return read_export_file(path, contract.ACTIVITY)


def test_each_record_keeps_its_first_line_across_both_paths(tmp_path):
    frame, broken, notes = _read(
        tmp_path,
        [
            f"e1,c1,purchase,books,1.00,{AT}",  # 2: plain
            f'e2,c1,purchase,"two\nlines",2.00,{AT}',  # 3-4: one record over two lines
            f"e3,c1,page_view,,,{AT}",  # 5: plain
            f'e4,c1,"open quote,,,{AT}',  # 6: a quote never closed: this line only
            f"e5,c1,page_view,,,{AT}",  # 7: plain again after the resync
            "",  # 8: blank
            f"e6,c1,page_view,,,{AT},extra",  # 9: one field too many
            f'e7,"c1",page_view,,,{AT}',  # 10: a quoted cell
            f"e8,c1,page_view,,,{AT}",  # 11: plain
        ],
    )
    assert frame["_line"].tolist() == [2, 3, 5, 7, 10, 11]
    assert frame["event_id"].tolist() == ["e1", "e2", "e3", "e5", "e7", "e8"]
    assert frame["product_category"].tolist()[1] == "two\nlines"
    assert frame["contact_id"].tolist() == ["c1"] * 6
    assert [line for line, _, _ in broken] == [6, 9]
    assert broken[0][1] == "unreadable CSV record: a quoted field is not closed on this line"
    assert broken[1][1] == "wrong number of fields (expected 6, found 7)"
    assert notes.unreadable == 1


def test_crlf_endings_split_like_the_csv_module(tmp_path):
    frame, broken, _ = _read(tmp_path, [f"e1,c1,purchase,books,1.00,{AT}", f'e2,c1,"x",,,{AT}'], ending="\r\n")
    assert frame["_line"].tolist() == [2, 3]
    assert frame["occurred_at"].tolist() == [AT, AT]  # no carriage return left on the last cell
    assert broken == []


def test_a_quote_left_open_on_the_last_line_read_by_the_csv_module_costs_that_line_only(tmp_path):
    # The csv module meets the open quote at the end of the lines it reads in one pass ("unexpected
    # end of data"), but the file goes on with plain lines: the record is read again from its own line.
    frame, broken, _ = _read(
        tmp_path,
        [
            f"e1,c1,purchase,books,1.00,{AT}",
            f'e2,c1,"open,,,{AT}',
            f"e3,c1,page_view,,,{AT}",
            f"e4,c1,page_view,,,{AT}",
        ],
    )
    assert frame["event_id"].tolist() == ["e1", "e3", "e4"]
    assert [line for line, _, _ in broken] == [3]
    assert broken[0][1] == "unreadable CSV record: a quoted field is not closed on this line"


def test_a_quoted_cell_whose_middle_line_looks_plain_stays_one_record(tmp_path):
    # Line 4 alone has the header's number of commas and no quote: it is inside the quoted cell all the same.
    frame, broken, _ = _read(
        tmp_path,
        [f"e1,c1,purchase,books,1.00,{AT}", f'e2,c1,purchase,"first\nx,y,z,w,v,u\nlast",2.00,{AT}', f"e3,c1,,,,{AT}"],
    )
    assert broken == []
    assert frame["_line"].tolist() == [2, 3, 6]
    assert frame["product_category"].tolist()[1] == "first\nx,y,z,w,v,u\nlast"


def test_random_well_formed_files_give_the_csv_modules_cells(tmp_path):
    """Seeded: quoted cells with commas, doubled quotes, line breaks of every kind, next to plain lines."""
    import csv
    import io
    import random

    cells = ["x", "Ünïcode", '"a,b"', '""', '"q""q"', 'a"b', "", " ", '"ü, ß"', '"multi\nline"', '"two\r\nlines"', "1"]
    rng = random.Random(20261208)
    for case in range(200):
        records = [
            ",".join(rng.choice(cells) for _ in range(6)) if rng.random() < 0.5 else f"e{case},c1,page_view,,,{AT}"
            for _ in range(rng.randint(1, 12))
        ]
        ending = rng.choice(["\n", "\r\n"])
        data = (ending.join([HEADER, *records]) + rng.choice([ending, ""])).encode()
        path = tmp_path / "activity.csv"
        path.write_bytes(data)
        frame, broken, _ = read_export_file(path, contract.ACTIVITY)
        expected = list(csv.reader(io.StringIO(data.decode(), newline=""), strict=True))[1:]
        expected = [row for row in expected if row and "".join(row).strip()]
        assert broken == [], data
        assert frame[list(contract.ACTIVITY.columns)].astype(object).values.tolist() == expected, data

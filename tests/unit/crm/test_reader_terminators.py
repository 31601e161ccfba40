"""The columnar split ends each line where the csv module ends a record: one terminator, whichever it is.

The reader strips a physical line's terminator (\\r\\n, \\n or a lone \\r) by trimming trailing CR and
LF, not by a regex per line; these cases check that this cuts exactly the terminator: mixed endings
in one file, a lone CR, trailing blanks kept, a carriage return inside a quoted cell kept.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from governed_marketing.crm import contract
from governed_marketing.crm.ingest import read_export_file

HEADER = "event_id,contact_id,event_type,product_category,amount,occurred_at"
AT = "2026-01-01T00:00:00Z"


def _csv_module(data: bytes) -> list[list[str]]:
    """What the csv module alone reads from the same bytes (non-blank records after the header)."""
    rows = list(csv.reader(io.StringIO(data.decode(), newline=""), strict=True))[1:]
    return [row for row in rows if row and "".join(row).strip()]


def test_mixed_terminators_give_the_csv_modules_cells_and_lines(tmp_path: Path):
    data = (
        f"{HEADER}\r\n"
        f"e1,c1,purchase,books,1.00,{AT}\n"  # line 2: LF
        f"e2,c1,purchase,books ,2.00,{AT}\r"  # line 3: a lone CR; the trailing blank in the cell stays
        f"e3,c1,page_view,,,{AT}\r\n"  # line 4: CRLF
        f'e4,c1,purchase,"a\rb",3.00,{AT}\r\n'  # lines 5-6: a CR inside a quoted cell stays in the cell
        f"e5,c1,page_view,,,{AT}"  # line 7: no terminator at the end of the file
    ).encode()
    path = tmp_path / "activity.csv"
    path.write_bytes(data)
    frame, broken, notes = read_export_file(path, contract.ACTIVITY)
    assert broken == []
    assert notes.byte_copy_ok
    cells = frame[list(contract.ACTIVITY.columns)].astype(object).values.tolist()
    assert cells == _csv_module(data)
    assert frame["_line"].tolist() == [2, 3, 4, 5, 7]
    assert frame["product_category"].tolist()[1] == "books "
    assert frame["product_category"].tolist()[3] == "a\rb"
    assert frame["occurred_at"].tolist() == [AT] * 5


def test_a_line_of_carriage_returns_only_is_blank_not_a_record(tmp_path: Path):
    data = f"{HEADER}\n\r\r\ne1,c1,purchase,books,1.00,{AT}\n".encode()
    path = tmp_path / "activity.csv"
    path.write_bytes(data)
    frame, broken, _ = read_export_file(path, contract.ACTIVITY)
    assert broken == []
    assert frame["event_id"].tolist() == ["e1"]
    assert frame["_line"].tolist() == [4]  # header, "\r", "\r\n", then the record

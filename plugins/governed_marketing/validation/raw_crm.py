"""The raw CRM gate's input and the referential check the ingest quarantines by.

An event (consent or activity) must point at a contact the CRM exported: one in this export's
contacts file (even if that contact's row was quarantined: the person exists, only their row is
broken) or one already loaded. Anything else is quarantined as "contact_id not in contacts".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from governed_marketing.validation.classification import column_classes
from governed_marketing.validation.gates import GateResult, run_gate
from governed_marketing.warehouse import table_exists

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse

ORPHAN_REASON = "contact_id not in contacts"


def known_contact_ids(conn: Warehouse, exported: pd.Series) -> set[str]:
    """Contact ids of this export's contacts file (stripped, non-blank) and of raw.crm_contacts."""
    known = {str(v) for v in exported.dropna().str.strip() if v}
    if table_exists(conn, "raw", "crm_contacts"):
        known.update(row[0] for row in conn.execute("select contact_id from raw.crm_contacts").fetchall())
    return known


def is_known_contact(contact: pd.Series, known: set[str]) -> pd.Series:
    """`contact.isin(known)`, by pyarrow's hash lookup: pandas' isin walks the whole set in Python per call."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pa.array(contact.astype(object).where(contact.notna(), None).tolist(), type=pa.string())
    found = pc.is_in(values, value_set=pa.array(list(known), type=pa.string()), skip_nulls=True)
    return pd.Series(found.fill_null(False).to_numpy(zero_copy_only=False), index=contact.index, dtype=bool)


def unknown_contact(frame: pd.DataFrame, known: set[str]) -> pd.Series:
    """Rows whose (non-blank) contact_id is not a known contact."""
    contact = frame["contact_id"]
    present = contact.notna() & (contact != "")
    return present & ~is_known_contact(contact, known)


def raw_gate_frame(file_name: str, loaded: pd.DataFrame, known: set[str]) -> pd.DataFrame:
    """The rows about to be loaded (without the ingest's line numbers), plus `is_contact_known`."""
    from expectations.raw_crm import CONTACT_KNOWN, LOADED_COLUMNS

    frame = loaded.drop(columns=["_line"], errors="ignore")
    if "amount" in frame:  # nullable Float64 as plain float64 (NA as NaN), the type GX checks
        frame = frame.assign(amount=frame["amount"].astype("float64"))
    if CONTACT_KNOWN in LOADED_COLUMNS[file_name]:
        frame = frame.assign(**{CONTACT_KNOWN: is_known_contact(frame["contact_id"], known)})
    return frame


def raw_crm_gate(file_name: str, frame: pd.DataFrame) -> GateResult:
    from expectations.raw_crm import COMPUTED_COLUMNS, SOURCE_TABLES, build_suite

    classes = column_classes(SOURCE_TABLES[file_name], extra=COMPUTED_COLUMNS)
    return run_gate("raw_crm", file_name, lambda: build_suite(file_name), frame, classes=classes)

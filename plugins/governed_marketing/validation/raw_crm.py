"""The raw CRM gate's input and the referential check the ingest quarantines by.

An event (consent or activity) must point at a contact the CRM exported: one in this export's
contacts file (even if that contact's row was quarantined: the person exists, only their row is
broken) or one already loaded. Anything else is quarantined as "contact_id not in contacts".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from governed_marketing.arrow_text import arrow_strings, isin
from governed_marketing.validation.classification import column_classes
from governed_marketing.validation.gates import GateResult, run_gate
from governed_marketing.warehouse import table_exists

if TYPE_CHECKING:
    import pyarrow as pa

    from governed_marketing.warehouse import Warehouse

ORPHAN_REASON = "contact_id not in contacts"


def known_contact_ids(conn: Warehouse, exported: pd.Series) -> pa.Array:
    """Contact ids of this export's contacts file (stripped, non-blank) and of raw.crm_contacts, unique.

    An Arrow array, not a Python set: built and looked up column-wise (no Python object per id),
    and passed as it is to `pc.is_in` by every check of the load.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    stripped = exported.dropna().str.strip()
    parts = [arrow_strings(stripped[stripped != ""])]
    if table_exists(conn, "raw", "crm_contacts"):
        loaded = conn.execute("select contact_id from raw.crm_contacts").df()["contact_id"]
        parts.append(arrow_strings(loaded))
    return pc.unique(pa.concat_arrays([part.cast(pa.large_string()) for part in parts]))


def unknown_contact(frame: pd.DataFrame, known: pa.Array) -> pd.Series:
    """Rows whose (non-blank) contact_id is not a known contact."""
    contact = frame["contact_id"]
    present = contact.notna() & (contact != "")
    return present & ~isin(contact, known)


def raw_gate_frame(file_name: str, loaded: pd.DataFrame, known: pa.Array) -> pd.DataFrame:
    """The rows about to be loaded (without the ingest's line numbers), plus `is_contact_known`."""
    from expectations.raw_crm import CONTACT_KNOWN, LOADED_COLUMNS

    frame = loaded.drop(columns=["_line"], errors="ignore")
    if "amount" in frame:  # nullable Float64 as plain float64 (NA as NaN), the type GX checks
        frame = frame.assign(amount=frame["amount"].astype("float64"))
    if CONTACT_KNOWN in LOADED_COLUMNS[file_name]:
        frame = frame.assign(**{CONTACT_KNOWN: isin(frame["contact_id"], known)})
    return frame


def raw_crm_gate(file_name: str, frame: pd.DataFrame) -> GateResult:
    from expectations.raw_crm import COMPUTED_COLUMNS, SOURCE_TABLES, build_suite

    classes = column_classes(SOURCE_TABLES[file_name], extra=COMPUTED_COLUMNS)
    return run_gate("raw_crm", file_name, lambda: build_suite(file_name), frame, classes=classes)

"""The raw CRM gate: what the ingest loads, checked against the export contract before it is written.

Row-level failures never reach this gate: the ingest quarantines them with a reason (and stops when
more than `ingest.max_quarantine_share` of a file fails). The gate is the independent proof that
every row about to be loaded has the contract's types, formats and required fields, and that every
consent and activity event points at a known contact. A failure stops the load: nothing is written.
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe
from governed_marketing.crm import contract

#: Computed by the ingest: the event's contact_id is in this export's contacts or already loaded.
CONTACT_KNOWN = "is_contact_known"
COMPUTED_COLUMNS = {CONTACT_KNOWN: "none"}

#: The loaded columns of each export file (the ingest's cleaned frame, before load_id is added).
LOADED_COLUMNS: dict[str, list[str]] = {
    contract.CONTACTS.name: [
        "contact_id",
        "email",
        "email_normalized",
        "first_name",
        "last_name",
        "phone",
        "city",
        "interests",
        "notes",
        "birth_date",
        "country",
        "language",
        "lifecycle_stage",
        "created_at",
        "updated_at",
    ],
    contract.CONSENT_EVENTS.name: [
        "event_id",
        "contact_id",
        "purpose",
        "action",
        "source",
        "notice_version",
        "occurred_at",
        CONTACT_KNOWN,
    ],
    contract.ACTIVITY.name: [
        "event_id",
        "contact_id",
        "event_type",
        "product_category",
        "amount",
        "occurred_at",
        CONTACT_KNOWN,
    ],
    contract.DSR_REQUESTS.name: ["request_id", "email_normalized", "request_type", "details", "received_at", "channel"],
}

#: A monetary amount as the ingest types it (an empty file yields an untyped column of no values).
NUMERIC_TYPES = ["float64", "float", "int64", "int"]

#: Characters no name the ingest keeps can hold (contract.normalize_name): control characters and markup.
NOT_IN_A_NAME = r"[\x00-\x1f\x7f-\x9f<>&\"=@{}\[\]\\/|`]"

#: The dbt source table whose `meta.pii` classifies each file's columns.
SOURCE_TABLES = {spec.name: f"crm.{spec.table}" for spec in contract.EXPORT_FILES}


def _key(suite: gx.ExpectationSuite, column: str) -> None:
    suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=column))


def _timestamp(suite: gx.ExpectationSuite, column: str, *, required: bool = True) -> None:
    if required:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(gxe.ExpectColumnValuesToBeOfType(column=column, type_="datetime64"))


def _known_contact(suite: gx.ExpectationSuite) -> None:
    suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column="contact_id"))
    suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=CONTACT_KNOWN, value_set=[True]))


def build_suite(file_name: str) -> gx.ExpectationSuite:
    """Types, formats, required fields and references of one export file's loaded rows."""
    if file_name not in LOADED_COLUMNS:
        raise ValueError(f"raw_crm: no suite for {file_name!r}; expected one of {', '.join(LOADED_COLUMNS)}")
    suite = gx.ExpectationSuite(name=f"raw_crm.{file_name.removesuffix('.csv')}")
    suite.add_expectation(gxe.ExpectTableColumnsToMatchSet(column_set=LOADED_COLUMNS[file_name], exact_match=True))
    if file_name == contract.CONTACTS.name:
        _key(suite, "contact_id")
        suite.add_expectation(
            gxe.ExpectColumnValuesToNotMatchRegex(column="contact_id", regex=contract.CONTROL.pattern)
        )
        for name in ("first_name", "last_name"):  # names are data: never markup, never longer than the rule allows
            suite.add_expectation(gxe.ExpectColumnValuesToNotMatchRegex(column=name, regex=NOT_IN_A_NAME))
            suite.add_expectation(
                gxe.ExpectColumnValueLengthsToBeBetween(column=name, min_value=1, max_value=contract.NAME_MAX_CHARS)
            )
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column="email_normalized"))
        suite.add_expectation(
            gxe.ExpectColumnValuesToMatchRegex(column="email_normalized", regex=contract.EMAIL.pattern)
        )
        suite.add_expectation(gxe.ExpectColumnValuesToBeInTypeList(column="birth_date", type_list=["date"]))
        suite.add_expectation(gxe.ExpectColumnValuesToMatchRegex(column="country", regex=r"^[A-Z]{2}$"))
        suite.add_expectation(gxe.ExpectColumnValuesToMatchRegex(column="language", regex=r"^[a-z]{2}$"))
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeInSet(column="lifecycle_stage", value_set=list(contract.LIFECYCLE_STAGES))
        )
        _timestamp(suite, "created_at")
        _timestamp(suite, "updated_at")
    elif file_name == contract.CONSENT_EVENTS.name:
        _key(suite, "event_id")
        _known_contact(suite)
        suite.add_expectation(gxe.ExpectColumnValueLengthsToBeBetween(column="purpose", min_value=1))
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeInSet(column="action", value_set=list(contract.CONSENT_ACTIONS))
        )
        _timestamp(suite, "occurred_at")
    elif file_name == contract.ACTIVITY.name:
        _key(suite, "event_id")
        _known_contact(suite)
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(contract.ACTIVITY_TYPES))
        )
        suite.add_expectation(gxe.ExpectColumnValuesToBeInTypeList(column="amount", type_list=NUMERIC_TYPES))
        _timestamp(suite, "occurred_at")
    else:
        _key(suite, "request_id")
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column="email_normalized"))
        suite.add_expectation(
            gxe.ExpectColumnValuesToMatchRegex(column="email_normalized", regex=contract.EMAIL.pattern)
        )
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeInSet(column="request_type", value_set=list(contract.DSR_TYPES))
        )
        suite.add_expectation(gxe.ExpectColumnValuesToBeJsonParseable(column="details"))
        _timestamp(suite, "received_at")
    return suite

"""Run a Great Expectations suite on a batch and fail closed, keeping no personal data.

The batch is a pandas frame (DuckDB, and every frame-based gate), or a `SqlBatch`: a SELECT that GX
runs through its Postgres (SQL) datasource, so the expectations compile to SQL and execute inside
the database (the campaign-audience gate with GMP_WAREHOUSE=postgres). Either way the same suite,
the same result formats, the same scrubbing and the same GateResult.

The result format is chosen per expectation from the classification of the columns it reads
(`meta.pii` in the dbt YAML): an expectation on a `direct` or `quasi` column runs with counts only,
so GX never samples its failing values; one on a `none` column keeps a short sample that helps the
reviewer. GX sets the result format per run, so a suite runs as (at most) two sub-suites whose
results are merged back into one, in suite order, and scrubbed once more before anything is
stored: validation results, logs, the report and Data Docs hold counts and rules, never values.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from governed_marketing.validation.classification import is_personal

log = logging.getLogger(__name__)

#: Counts only: what an expectation on a personal column may return. GX's SUMMARY alone still returns
#: up to 20 failing values (`partial_unexpected_list`): those would be emails in the stored results.
PERSONAL_RESULT_FORMAT = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": 0,
    "include_unexpected_rows": False,
    "return_unexpected_index_query": False,
}
#: Counts and a short sample of failing values: only for columns classified `none`.
DESCRIPTIVE_RESULT_FORMAT = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": 10,
    "include_unexpected_rows": False,
    "return_unexpected_index_query": False,
}

#: Table-level expectations whose results hold only column names and row counts.
TABLE_SHAPE_EXPECTATIONS = frozenset(
    {
        "expect_table_columns_to_match_set",
        "expect_table_columns_to_match_ordered_list",
        "expect_table_column_count_to_equal",
        "expect_table_column_count_to_be_between",
        "expect_table_row_count_to_equal",
        "expect_table_row_count_to_be_between",
        "expect_column_to_exist",
    }
)
#: The result keys an expectation on a personal column may keep: counts and shares.
COUNT_KEYS = frozenset(
    {
        "element_count",
        "unexpected_count",
        "unexpected_percent",
        "unexpected_percent_total",
        "unexpected_percent_nonmissing",
        "missing_count",
        "missing_percent",
    }
)
_COLUMN_KWARGS = ("column", "column_A", "column_B", "column_list")
#: Rules that look for what must not be there: a value breaking one is suspect by definition, so
#: its result is counts only whatever the column's class.
SUSPECT_VALUE_EXPECTATIONS = frozenset(
    {
        "expect_column_values_to_not_match_regex",
        "expect_column_values_to_not_match_regex_list",
        "expect_column_values_to_not_match_like_pattern",
        "expect_column_values_to_not_match_like_pattern_list",
        "expect_column_values_to_not_be_in_set",
    }
)
WITHHELD = "[withheld: looks like personal data]"


@dataclass(frozen=True)
class SqlBatch:
    """A batch that stays in Postgres: GX validates `query` over its own SQLAlchemy connection.

    GX's connection cannot see the caller's TEMP tables or uncommitted rows: the query may read
    committed tables only. `columns` and `rows` describe its result (for the stored result and the
    one-line reason; they are names and a count, never values).
    """

    connection_string: str = field(repr=False)  # may hold the password: never logged or stored
    query: str
    columns: tuple[str, ...]
    rows: int


class GateFailed(RuntimeError):
    """A gate failed: what follows must not run. The message names the gate and the counts."""

    def __init__(self, result: GateResult, note: str | None = None) -> None:
        self.result = result
        super().__init__(result.one_line() + (f"; {note}" if note else ""))


@dataclass
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None = None
    result_format: str = "counts only"


@dataclass
class GateResult:
    gate: str
    subject: str
    success: bool
    rows: int
    outcomes: list[ExpectationOutcome] = field(default_factory=list)
    validated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    suite_name: str | None = None
    #: The scrubbed GX suite validation result (JSON dict), from which Data Docs are built.
    validation: dict | None = None

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def one_line(self) -> str:
        if self.success:
            return f"{self.gate} gate passed for {self.subject}: {len(self.outcomes)} expectations on {self.rows} rows"
        failures = ", ".join(
            f"{o.expectation}({o.column or 'table'})" + (f" {o.unexpected_count} rows" if o.unexpected_count else "")
            for o in self.failed
        )
        return (
            f"{self.gate} gate failed for {self.subject}: {len(self.failed)} of {len(self.outcomes)} "
            f"expectations failed on {self.rows} rows: {failures}"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> GateResult:
        data = json.loads(text)
        data["outcomes"] = [ExpectationOutcome(**o) for o in data.get("outcomes", [])]
        return cls(**data)


def expectation_columns(kwargs: Mapping[str, Any]) -> list[str]:
    """The columns an expectation reads (none for a table-level one)."""
    columns: list[str] = []
    for key in _COLUMN_KWARGS:
        value = kwargs.get(key)
        if isinstance(value, str):
            columns.append(value)
        elif isinstance(value, list | tuple):
            columns.extend(str(v) for v in value)
    return columns


def reads_personal_data(expectation_type: str, kwargs: Mapping[str, Any], classes: Mapping[str, str] | None) -> bool:
    """Whether an expectation's result must be counts only: it reads a direct/quasi/unclassified column.

    With no classification at all, every column is treated as personal.
    """
    columns = expectation_columns(kwargs)
    if not columns:
        return expectation_type not in TABLE_SHAPE_EXPECTATIONS
    if expectation_type in SUSPECT_VALUE_EXPECTATIONS:
        return True
    if expectation_type == "expect_column_to_exist":
        return False
    if classes is None:
        return True
    return any(is_personal(classes.get(column)) for column in columns)


def _context():
    """An ephemeral GX context: in-memory stores, no analytics, no progress bars in the task log."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _key(config_type: str, kwargs: Mapping[str, Any]) -> str:
    return config_type + json.dumps({k: v for k, v in kwargs.items() if k != "batch_id"}, sort_keys=True, default=str)


def _scrub(item: dict, *, personal: bool, known_names: set[str]) -> dict:
    """Keep what the result format allows; for a personal column, counts and column names only."""
    item = dict(item)
    exception = dict(item.get("exception_info") or {})
    if exception:
        exception["exception_traceback"] = None
        if personal and exception.get("exception_message"):
            exception["exception_message"] = "the expectation raised an error (message withheld: personal column)"
        item["exception_info"] = exception
    result = dict(item.get("result") or {})
    if personal:
        kept = {k: v for k, v in result.items() if k in COUNT_KEYS}
        observed = result.get("observed_value")
        if isinstance(observed, list) and all(isinstance(v, str) and v in known_names for v in observed):
            kept["observed_value"] = observed  # column names of the frame
        item["result"] = kept
    else:
        result.pop("unexpected_list", None)
        result.pop("unexpected_index_list", None)
        result.pop("unexpected_index_query", None)
        result.pop("unexpected_rows", None)
        if "partial_unexpected_list" in result:
            result["partial_unexpected_list"] = [_sample(v) for v in result["partial_unexpected_list"]]
        if "partial_unexpected_counts" in result:
            result["partial_unexpected_counts"] = [
                {**entry, "value": _sample(entry.get("value"))} for entry in result["partial_unexpected_counts"]
            ]
        item["result"] = result
    return item


def _sample(value: Any) -> Any:
    """A failing value of a `none` column, unless it has the shape of an identifier after all."""
    from governed_marketing.validation.patterns import NAMED_IDENTIFIER_PATTERNS

    if isinstance(value, str) and any(re.search(p, value) for p in NAMED_IDENTIFIER_PATTERNS.values()):
        return WITHHELD
    return value


def run_gate(
    gate: str,
    subject: str,
    build_suite: Callable[[], Any],
    frame: pd.DataFrame | SqlBatch,
    *,
    classes: Mapping[str, str] | None = None,
) -> GateResult:
    """Validate `frame` against the suite `build_suite()` returns, in an ephemeral GX context.

    Args:
        frame: a pandas frame (GX's pandas datasource), or a `SqlBatch` (GX's Postgres datasource:
            the expectations run as SQL in the database; no frame of the rows is built).
        classes: `meta.pii` per column (`direct|quasi|none`); an unlisted column counts as `direct`,
            and without a mapping every column does.

    Never raises on a failed expectation: the caller decides (and fails closed).
    """
    context = _context()  # suites can only be built inside an active context
    suite = build_suite()
    batch = _GateBatch.of(context, gate, frame)
    try:
        merged, meta = _validate_by_group(context, gate, subject, suite, batch, classes)
    finally:
        batch.close()
    validation_dict = _validation_dict(suite, [item for _, item, _ in merged], meta, gate, subject, batch)
    outcomes = [
        ExpectationOutcome(
            expectation=item["expectation_config"]["type"],
            column=_outcome_column(item["expectation_config"]["kwargs"]),
            success=bool(item["success"]),
            unexpected_count=(item.get("result") or {}).get("unexpected_count"),
            result_format="counts only" if personal else "counts and a sample of values",
        )
        for _, item, personal in merged
    ]
    result = GateResult(
        gate=gate,
        subject=subject,
        success=validation_dict["success"],
        rows=batch.rows,
        outcomes=outcomes,
        suite_name=suite.name,
        validation=validation_dict,
    )
    log.info(result.one_line())
    return result


@dataclass
class _GateBatch:
    """The rows a gate validates, as a GX batch: a pandas frame, or a query the database runs."""

    source: Any
    definition: Any
    parameters: dict | None
    columns: list[str]
    rows: int
    in_database: bool

    @classmethod
    def of(cls, context: Any, gate: str, frame: pd.DataFrame | SqlBatch) -> _GateBatch:
        if isinstance(frame, SqlBatch):
            source = context.data_sources.add_postgres(f"{gate}_postgres", connection_string=frame.connection_string)
            definition = source.add_query_asset(gate, query=frame.query).add_batch_definition_whole_table(
                f"{gate}_batch"
            )
            return cls(source, definition, None, [str(c) for c in frame.columns], frame.rows, True)
        source = context.data_sources.add_pandas(f"{gate}_source")
        definition = source.add_dataframe_asset(gate).add_batch_definition_whole_dataframe(f"{gate}_batch")
        return cls(source, definition, {"dataframe": frame}, [str(c) for c in frame.columns], len(frame), False)

    def close(self) -> None:
        if self.in_database:
            self.source.get_engine().dispose()  # GX's own connections to the warehouse: closed, not pooled


def _validate_by_group(
    context: Any, gate: str, subject: str, suite: Any, batch: _GateBatch, classes: Mapping[str, str] | None
) -> tuple[list[tuple[int, dict, bool]], dict[str, Any]]:
    """Run the expectations on personal columns and the rest as two suites, each with its own result
    format; return the scrubbed results in the suite's order (with whether each read personal data).

    Both suites run on one GX validator, so GX builds the batch once: a pandas batch is fingerprinted
    (`hash_pandas_object` over every cell, a marker we drop) and wrapped once per gate, not once per
    suite, and metrics both suites need (row count, null counts) are computed once. The run's meta is
    what `ValidationDefinition.run` records (validation_id, run_id, validation_time, batch_parameters).
    """
    import great_expectations as gx
    from great_expectations.constants import DATAFRAME_REPLACEMENT_STR
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.validator.v1_validator import Validator

    groups: dict[str, list] = {"personal": [], "descriptive": []}
    for expectation in suite.expectations:
        config = expectation.configuration
        groups["personal" if reads_personal_data(config.type, config.kwargs, classes) else "descriptive"].append(config)
    formats = {"personal": PERSONAL_RESULT_FORMAT, "descriptive": DESCRIPTIVE_RESULT_FORMAT}
    order = {_key(e.configuration.type, e.configuration.kwargs): i for i, e in enumerate(suite.expectations)}
    known_names = set(batch.columns) | {
        str(v) for e in suite.expectations for v in (e.configuration.kwargs.get("column_set") or [])
    }
    merged: list[tuple[int, dict, bool]] = []
    meta: dict[str, Any] = {}
    validator = Validator(batch_definition=batch.definition, batch_parameters=batch.parameters)
    for group, configs in groups.items():
        if not configs:
            continue
        part = context.suites.add(
            gx.ExpectationSuite(name=f"{suite.name}.{group}", expectations=[c.to_domain_obj() for c in configs])
        )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{gate}:{subject}:{group}", data=batch.definition, suite=part)
        )
        validator.result_format = formats[group]
        validation = validator.validate_expectation_suite(part)
        run_id = RunIdentifier(run_time=datetime.now(UTC))
        meta = {
            **validation.meta,
            "validation_id": definition.id,
            "checkpoint_id": None,
            "run_id": run_id,
            "validation_time": run_id.run_time,
            "batch_parameters": (
                {k: DATAFRAME_REPLACEMENT_STR if k == "dataframe" else v for k, v in batch.parameters.items()}
                if batch.parameters
                else None
            ),
        }
        personal = group == "personal"
        for item in validation.to_json_dict()["results"]:
            config = item["expectation_config"]
            index = order.get(_key(config["type"], config["kwargs"]), len(order))
            merged.append((index, _scrub(item, personal=personal, known_names=known_names), personal))
    merged.sort(key=lambda entry: entry[0])
    return merged, meta


def _validation_dict(
    suite: Any, results: list[dict], meta: dict[str, Any], gate: str, subject: str, batch: _GateBatch
) -> dict[str, Any]:
    """One GX validation result (the shape Data Docs render) from the groups' scrubbed results."""
    succeeded = sum(1 for item in results if item["success"])
    run_meta = json.loads(json.dumps(meta, default=str))
    run_meta.get("batch_markers", {}).pop("pandas_data_fingerprint", None)
    run_meta["gmp"] = {"gate": gate, "subject": subject, "rows": batch.rows}
    if batch.in_database:  # where the expectations ran: GX's SQL execution engine on the Postgres datasource
        run_meta["gmp"]["execution"] = {
            "datasource": batch.source.type,
            "engine": batch.source.execution_engine_type.__name__,
        }
    return {
        "success": succeeded == len(results),
        "results": results,
        "suite_name": suite.name,
        "suite_parameters": {},
        "statistics": {
            "evaluated_expectations": len(results),
            "successful_expectations": succeeded,
            "unsuccessful_expectations": len(results) - succeeded,
            "success_percent": 100.0 * succeeded / len(results) if results else None,
        },
        "meta": run_meta,
        "id": None,
    }


def _outcome_column(kwargs: Mapping[str, Any]) -> str | None:
    columns = expectation_columns(kwargs)
    return ",".join(columns) if columns else None

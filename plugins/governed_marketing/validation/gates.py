"""Run a Great Expectations suite on a pandas batch and fail closed.

Results are stored as counts per expectation only: the result format keeps no unexpected values,
so no raw value of any column (personal or not) reaches validation results, logs or reports.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

#: SUMMARY counts without the sample of failing values GX keeps by default (DESIGN.md pitfall).
SAFE_RESULT_FORMAT = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": 0,
    "include_unexpected_rows": False,
}


class GateFailed(RuntimeError):
    """A gate failed: what follows must not run. The message names the gate and the counts."""

    def __init__(self, result: GateResult) -> None:
        self.result = result
        super().__init__(result.one_line())


@dataclass
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None = None


@dataclass
class GateResult:
    gate: str
    subject: str
    success: bool
    rows: int
    outcomes: list[ExpectationOutcome] = field(default_factory=list)
    validated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

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
        return json.dumps(asdict(self), sort_keys=True)


def run_gate(gate: str, subject: str, build_suite: Callable[[], Any], frame: pd.DataFrame) -> GateResult:
    """Validate `frame` against the suite `build_suite()` returns, in an ephemeral GX context.

    Never raises on a failed expectation: the caller decides (and fails closed).
    """
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")  # suites can only be built inside an active context
    suite = build_suite()
    source = context.data_sources.add_pandas(f"{gate}_source")
    asset = source.add_dataframe_asset(gate)
    batch_definition = asset.add_batch_definition_whole_dataframe(f"{gate}_batch")
    suite = context.suites.add(suite)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{gate}:{subject}", data=batch_definition, suite=suite)
    )
    validation = definition.run(batch_parameters={"dataframe": frame}, result_format=SAFE_RESULT_FORMAT)
    outcomes = []
    for item in validation.results:
        config = item.expectation_config
        outcomes.append(
            ExpectationOutcome(
                expectation=config.type,
                column=config.kwargs.get("column"),
                success=bool(item.success),
                unexpected_count=(item.result or {}).get("unexpected_count"),
            )
        )
    result = GateResult(
        gate=gate, subject=subject, success=bool(validation.success), rows=len(frame), outcomes=outcomes
    )
    log.info(result.one_line())
    return result

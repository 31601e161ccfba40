"""Great Expectations gates that fail closed, with results that hold no personal data."""

from governed_marketing.validation.evidence import latest_gate_results, record_gate
from governed_marketing.validation.gates import GateFailed, GateResult, run_gate

__all__ = ["GateFailed", "GateResult", "latest_gate_results", "record_gate", "run_gate"]

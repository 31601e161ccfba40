"""Great Expectations gates that fail closed, with results that hold no personal data."""

from governed_marketing.validation.gates import GateFailed, GateResult, run_gate

__all__ = ["GateFailed", "GateResult", "run_gate"]

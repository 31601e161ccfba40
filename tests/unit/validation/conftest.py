"""Shared helpers for the gate tests: the real policy, and what failed in a gate result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from governed_marketing.policy import Policy, load_policy
from governed_marketing.validation import GateResult

REPO = Path(__file__).resolve().parents[3]
CAMPAIGN = "spring_newsletter"
PSEUDONYM = "a" * 64


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_policy(REPO / "governance.yml")


def failed(result: GateResult) -> set[tuple[str, str | None]]:
    """(expectation, column) of every failed expectation."""
    return {(o.expectation, o.column) for o in result.failed}


def covered(result: GateResult) -> set[tuple[str, str | None]]:
    return {(o.expectation, o.column) for o in result.outcomes}


def stored(result: GateResult) -> str:
    """Everything that would be persisted for this result (ops.gate_results, Data Docs input)."""
    return result.to_json() + json.dumps(result.validation or {})

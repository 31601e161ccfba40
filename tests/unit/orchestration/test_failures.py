"""The Airflow edge's one translation: failures a retry cannot fix fail the task at once, without retries."""

from __future__ import annotations

import pytest
from airflow.exceptions import AirflowFailException
from governed_marketing.crm.ingest import CrmExportError
from governed_marketing.errors import ExportUnreadable
from governed_marketing.generation.campaign import UnitsFailed
from governed_marketing.orchestration.failures import fail_fast, is_deterministic
from governed_marketing.policy import PolicyError


def test_units_that_failed_their_content_rules_fail_the_task_without_a_retry() -> None:
    """A retry would send the same rejected requests again and pay for the same answers."""
    with pytest.raises(AirflowFailException, match="could not be drafted"), fail_fast():
        raise UnitsFailed("3 of 24 unit(s) could not be drafted", retryable=False)


def test_units_that_failed_at_the_vendor_are_left_to_airflows_retries() -> None:
    with pytest.raises(UnitsFailed, match=r"\(server\)"), fail_fast():  # re-raised as is, not AirflowFailException
        raise UnitsFailed("2 of 24 unit(s) could not be drafted (server)")


def test_a_task_stopped_by_sigterm_fails_without_a_retry() -> None:
    """In the process that was asked to stop, a retry would only stop again while Airflow waits for it
    (CI saw `gmp run` wait on such retries after SIGTERM instead of exiting)."""
    from governed_marketing.stopping import RunInterrupted

    with pytest.raises(AirflowFailException, match="the run is stopping"), fail_fast():
        raise RunInterrupted("spring_newsletter: not drafted, the run is stopping (SIGTERM)")


def test_the_list_holds_export_and_policy_errors_not_transient_ones() -> None:
    assert all(is_deterministic(e("x")) for e in (ExportUnreadable, CrmExportError, PolicyError))
    assert not is_deterministic(ValueError("x")) and not is_deterministic(OSError("database is locked"))


def test_a_task_body_in_fail_fast_fails_at_once_on_a_bad_export_and_keeps_transient_errors() -> None:
    with pytest.raises(AirflowFailException, match=r"ExportUnreadable: .*no CRM export"), fail_fast():
        raise ExportUnreadable("/drop: no CRM export there")
    with pytest.raises(OSError, match="database is locked"), fail_fast():  # re-raised as is: Airflow retries it
        raise OSError("database is locked")

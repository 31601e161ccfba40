"""The draft operator's edge: failures a retry cannot fix fail the task at once, without Airflow's retries."""

from __future__ import annotations

import pytest
from airflow.exceptions import AirflowFailException
from governed_marketing.generation.campaign import UnitsFailed
from governed_marketing.generation.operators import DraftCampaignOperator


def test_units_that_failed_their_content_rules_fail_the_task_without_a_retry() -> None:
    """A retry would send the same rejected requests again and pay for the same answers."""
    with pytest.raises(AirflowFailException, match="could not be drafted"):
        DraftCampaignOperator._fail_closed(UnitsFailed("3 of 24 unit(s) could not be drafted", retryable=False))


def test_units_that_failed_at_the_vendor_are_left_to_airflows_retries() -> None:
    DraftCampaignOperator._fail_closed(UnitsFailed("2 of 24 unit(s) could not be drafted (server)"))  # no raise

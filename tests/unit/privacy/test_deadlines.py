"""Deadlines in calendar months, as Art. 12(3) and EU time-limit rules count them."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from governed_marketing.policy import load_policy
from governed_marketing.privacy import dsr

from tests.unit.privacy.conftest import email_of


@pytest.fixture(scope="module")
def policy():
    return load_policy()


@pytest.mark.parametrize(
    ("received", "due"),
    [
        (date(2027, 1, 31), date(2027, 2, 28)),  # no 31 February: the last day of the month
        (date(2028, 1, 31), date(2028, 2, 29)),  # leap year
        (date(2027, 1, 30), date(2027, 2, 28)),
        (date(2027, 3, 31), date(2027, 4, 30)),
        (date(2027, 3, 15), date(2027, 4, 15)),
        (date(2026, 12, 31), date(2027, 1, 31)),  # across the year
    ],
)
def test_a_request_is_due_one_calendar_month_after_receipt(policy, received, due):
    assert dsr.due_date(received, policy) == due
    assert dsr.due_date(datetime.combine(received, datetime.max.time()), policy) == due  # the day counts, not the hour


@pytest.mark.parametrize(
    ("received", "extended"),
    [
        (date(2027, 1, 31), date(2027, 4, 28)),  # due 28 Feb, then two further months
        (date(2028, 1, 31), date(2028, 4, 29)),  # due 29 Feb (leap year)
        (date(2027, 3, 15), date(2027, 6, 15)),
    ],
)
def test_an_extension_adds_two_further_months_to_the_deadline(policy, received, extended):
    assert dsr.extended_due_date(dsr.due_date(received, policy), policy) == extended


def test_an_extension_needs_a_reason_and_must_be_decided_within_the_first_month(home):
    with home.connect() as conn:
        request_id = dsr.submit(
            conn, "access", email_of("alice"), policy=home.policy, key=home.key, now=datetime(2027, 1, 31, 9)
        )
        with pytest.raises(dsr.DsrError, match="reason"):
            dsr.extend(conn, request_id, " ", policy=home.policy, now=datetime(2027, 2, 10))
        with pytest.raises(dsr.DsrError, match="within the first month"):
            dsr.extend(conn, request_id, "complex request", policy=home.policy, now=datetime(2027, 3, 1))
        assert dsr.extend(conn, request_id, "complex request", policy=home.policy, now=datetime(2027, 2, 28)) == date(
            2027, 4, 28
        )
        request = dsr.get(conn, request_id)
    assert request.effective_due == date(2027, 4, 28)
    assert request.extension_reason == "complex request"


def test_days_left_count_down_to_the_due_date_and_overdue_starts_the_day_after(home):
    with home.connect() as conn:
        request_id = dsr.submit(
            conn, "erasure", email_of("bob"), policy=home.policy, key=home.key, now=datetime(2028, 1, 31, 23, 59)
        )
        request = dsr.get(conn, request_id)
        assert request.due_date == date(2028, 2, 29)
        assert request.days_left(date(2028, 2, 1)) == 28
        assert not request.overdue(date(2028, 2, 29))
        assert request.overdue(date(2028, 3, 1))
        assert [r.request_id for r in dsr.overdue(conn, today=date(2028, 3, 1))] == [request_id]
        dsr.set_status(conn, request_id, "done", now=datetime(2028, 3, 2))
        assert dsr.overdue(conn, today=date(2028, 3, 5)) == []
        assert dsr.get(conn, request_id).days_left(date(2028, 3, 5)) is None


def test_the_daily_check_fails_loudly_naming_overdue_requests(home):
    with home.connect() as conn:
        late = dsr.submit(
            conn, "access", email_of("carol"), policy=home.policy, key=home.key, now=datetime(2027, 1, 31)
        )
    with pytest.raises(
        dsr.OverdueRequests, match=rf"1 data subject request\(s\) overdue.*{late} \(access, due 2027-02-28\)"
    ):
        dsr.check_overdue(now=datetime(2027, 3, 1))
    assert dsr.check_overdue(now=datetime(2027, 2, 28)) == {"open": 1, "overdue": 0}


def test_a_submitted_request_is_refused_without_a_valid_email_or_type(home):
    with home.connect() as conn:
        with pytest.raises(dsr.DsrError, match="not valid"):
            dsr.submit(conn, "erasure", "not-an-email", policy=home.policy, key=home.key)
        with pytest.raises(dsr.DsrError, match="not one of"):
            dsr.submit(conn, "forget-me", email_of("alice"), policy=home.policy, key=home.key)
        with pytest.raises(dsr.DsrError, match="JSON"):
            dsr.submit(conn, "rectification", email_of("alice"), "{oops", policy=home.policy, key=home.key)

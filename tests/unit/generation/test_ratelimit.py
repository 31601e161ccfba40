"""The client-side rate limiter: header parsing, learning the budget, and the shared cool-down."""

from __future__ import annotations

import threading

import pytest
from governed_marketing.generation.ratelimit import (
    LimiterStopped,
    RateLimiter,
    RateLimitHeaders,
    RateLimitWaitTooLong,
    parse_duration,
    retry_after,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("1m30s", 90.0),
        ("20ms", 0.02),
        ("0s", 0.0),
        ("1m30.5s", 90.5),
        ("7.66s", 7.66),
        ("2h3m", 7380.0),
        ("250us", 0.00025),
        ("2", 2.0),  # a bare number is seconds
        (" 120ms ", 0.12),
    ],
)
def test_duration_headers_are_read_as_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "soon", "1x", "m", "-1s", "1s garbage", "nan"])
def test_unreadable_durations_are_none_not_errors(text: str | None) -> None:
    assert parse_duration(text) is None


def test_rate_limit_headers_are_parsed_whatever_their_casing() -> None:
    seen = RateLimitHeaders.parse(
        {
            "X-RateLimit-Limit-Requests": "60",
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-tokens": "149984",
            "x-ratelimit-reset-tokens": "6ms",
        }
    )

    assert seen == RateLimitHeaders(60, 59, 1.0, 150000, 149984, 0.006)
    assert seen.present


def test_missing_rate_limit_headers_leave_nothing_learned() -> None:
    assert not RateLimitHeaders.parse({"content-type": "application/json"}).present


def test_retry_after_prefers_milliseconds_then_seconds() -> None:
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert retry_after({}) is None


def test_budget_and_refill_rate_are_learned_from_the_headers() -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_in_flight=4, clock=clock)
    first = limiter.acquire(100)
    assert not limiter.learned

    limiter.release(
        first,
        {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "50",
            "x-ratelimit-reset-requests": "10s",
            "x-ratelimit-limit-tokens": "6000",
            "x-ratelimit-remaining-tokens": "5000",
            "x-ratelimit-reset-tokens": "500ms",
        },
    )

    seen = limiter.snapshot()
    assert limiter.learned
    assert seen["remaining_requests"] == 50 and seen["remaining_tokens"] == 5000
    # At least (limit - remaining - 1) / reset (remaining is rounded down), never below limit per minute.
    assert seen["requests_per_s"] == pytest.approx(1.0)  # max(60 / 60 s, (60 - 50 - 1) / 10 s)
    assert seen["tokens_per_s"] == pytest.approx(1998.0)  # (6000 - 5000 - 1) / 0.5 s
    clock.now += 2
    assert limiter.snapshot()["remaining_requests"] == pytest.approx(52)


def test_calls_still_in_flight_are_subtracted_from_what_the_vendor_says_is_left() -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_in_flight=4, clock=clock)
    limiter.release(limiter.acquire(10))  # the probe: opens the limiter to 4 in flight
    a, b = limiter.acquire(10), limiter.acquire(30)

    limiter.release(a, {"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "900"})

    assert limiter.snapshot()["remaining_tokens"] == 870  # b's 30 may not be counted yet
    limiter.release(b)


def test_older_snapshots_do_not_overwrite_newer_ones() -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_in_flight=4, clock=clock)
    limiter.release(limiter.acquire(1))
    older = limiter.acquire(1)
    clock.now += 1
    newer = limiter.acquire(1)

    limiter.release(newer, {"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "10"})
    limiter.release(older, {"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "90"})

    assert limiter.snapshot()["remaining_requests"] == 9  # 10, less `older` still in flight then


def test_a_429_pauses_every_caller_for_the_time_the_vendor_asked() -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_in_flight=4, clock=clock, max_wait_s=5)

    assert limiter.rate_limited({"retry-after-ms": "1500"}) == 1.5
    assert limiter.snapshot()["cool_down_s"] == 1.5
    assert limiter.rate_limited({"retry-after": "30"}) == 30
    with pytest.raises(RateLimitWaitTooLong):  # 30 s is longer than this limiter waits
        limiter.acquire(1)
    assert limiter.rate_limited_count == 2


def test_a_429_without_retry_after_waits_for_the_exhausted_resource_or_backs_off() -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_in_flight=1, clock=clock)

    exhausted = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2.5s"}
    assert limiter.rate_limited(exhausted) == 2.5
    # Nothing admitted yet to learn a rate from: a back-off that doubles.
    assert [limiter.rate_limited({}) for _ in range(3)] == [2.0, 4.0, 8.0]  # the 2nd, 3rd, 4th in a row
    limiter.succeeded()
    clock.now += 1
    assert limiter.rate_limited({}) == 0.0  # now paced by the rate learned from what got through


def test_a_429_without_headers_paces_at_the_rate_the_vendor_admitted() -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_in_flight=8, clock=clock)
    for _ in range(30):  # 10 calls a second go through for 3 s
        clock.now += 0.1
        limiter.release(limiter.acquire(1))
        limiter.succeeded()
    assert not limiter.paced

    assert limiter.rate_limited({}) == 0.0  # no cool-down: the emptied bucket paces
    seen = limiter.snapshot()
    assert seen["requests_per_s"] == pytest.approx(10 * 0.97, rel=0.05)
    assert seen["remaining_requests"] == pytest.approx(0)
    assert not limiter.learned and limiter.paced
    clock.now += 0.05
    assert limiter.snapshot()["remaining_requests"] < 1  # the next call waits for the refill
    clock.now += 0.1
    limiter.acquire(1)


def test_the_learned_rate_is_cut_once_per_overshoot_and_rises_while_calls_go_through() -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_in_flight=8, clock=clock)
    for _ in range(30):
        clock.now += 0.1
        limiter.succeeded()
    limiter.rate_limited({})
    first = limiter.snapshot()["requests_per_s"]
    limiter.rate_limited({})  # the same overshoot (within a second): the rate stays
    assert limiter.snapshot()["requests_per_s"] == first
    for _ in range(20):  # 2 s of calls going through at the learned pace
        clock.now += 0.1
        limiter.succeeded()
    assert limiter.snapshot()["requests_per_s"] > first


def test_a_configured_cap_paces_from_the_first_call_and_is_a_ceiling() -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_in_flight=8, clock=clock, requests_per_minute=120, tokens_per_minute=6000)
    seen = limiter.snapshot()
    assert seen["requests_per_s"] == 2.0 and seen["tokens_per_s"] == 100.0
    assert seen["remaining_requests"] == 120  # a minute's budget, like the vendor's

    limiter.release(
        limiter.acquire(10),
        {
            "x-ratelimit-limit-requests": "600",
            "x-ratelimit-remaining-requests": "599",
            "x-ratelimit-reset-requests": "100ms",
        },
    )
    assert limiter.snapshot()["requests_per_s"] == 2.0  # headers promising more do not lift the cap
    with pytest.raises(ValueError, match="requests_per_minute"):
        RateLimiter(max_in_flight=1, requests_per_minute=0)


def test_only_one_call_is_in_flight_until_the_first_answer_arrives() -> None:
    limiter = RateLimiter(max_in_flight=4)
    probe = limiter.acquire(1)
    admitted = threading.Event()

    def second() -> None:
        limiter.release(limiter.acquire(1))
        admitted.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not admitted.wait(0.3)
    limiter.release(probe)
    assert admitted.wait(5)
    thread.join()


def test_a_stop_event_interrupts_a_waiting_caller() -> None:
    limiter = RateLimiter(max_in_flight=1)
    limiter.rate_limited({"retry-after": "60"})
    stop = threading.Event()
    stop.set()

    with pytest.raises(LimiterStopped):
        limiter.acquire(1, stop=stop)


def test_vendor_limits_in_governance_yml_are_validated_naming_the_key(tmp_path) -> None:
    from pathlib import Path

    import yaml
    from governed_marketing.policy import PolicyError, parse_policy

    shipped = Path(__file__).resolve().parents[3] / "governance.yml"
    raw = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    (tmp_path / "prompts").symlink_to(shipped.parent / "prompts")

    raw["vendors"]["openai"]["limits"] = {"requests_per_minute": 300, "tokens_per_minute": 150_000}
    policy = parse_policy(yaml.safe_dump(raw), path=tmp_path / "governance.yml")
    assert policy.vendors["openai"].limits.requests_per_minute == 300

    raw["vendors"]["openai"]["limits"] = {"requests_per_minute": 0, "tokens_per_mnute": 1}
    with pytest.raises(PolicyError) as caught:
        parse_policy(yaml.safe_dump(raw), path=tmp_path / "governance.yml")
    assert "vendors.openai.limits.requests_per_minute" in str(caught.value)
    assert "vendors.openai.limits.tokens_per_mnute" in str(caught.value)


def test_the_configured_limits_reach_the_sync_limiter(monkeypatch) -> None:
    from pathlib import Path

    import yaml
    from governed_marketing.generation.providers import build_provider
    from governed_marketing.generation.transports.sync import OpenAIProvider
    from governed_marketing.policy import parse_policy
    from governed_marketing.settings import Settings

    shipped = Path(__file__).resolve().parents[3] / "governance.yml"
    raw = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    raw["vendors"]["openai"]["limits"] = {"requests_per_minute": 300}
    policy = parse_policy(yaml.safe_dump(raw), path=shipped)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("GMP_LLM_PROVIDER", "openai")

    provider = build_provider(Settings(), policy, vendor_allowed=True)

    assert isinstance(provider, OpenAIProvider)
    assert provider.limiter.snapshot()["requests_per_s"] == 5.0

"""Client-side pacing of vendor calls: requests and tokens per minute, learned from the vendor's headers.

OpenAI says what is left on every response:

    x-ratelimit-limit-requests / -tokens      the most that may be used before the limit is exhausted
    x-ratelimit-remaining-requests / -tokens  what may still be used now
    x-ratelimit-reset-requests / -tokens      time until the limit is back to its initial state ("1s", "6m0s", "20ms")

The budget refills continuously (at 60 rpm, one request sent leaves `remaining 59, reset 1s`), so
`RateLimiter` keeps one bucket a resource: its capacity is the limit, its refill rate is learned from
(limit - remaining) / reset (a lower bound of it; never below limit per minute), and its level is set from
`remaining` on every response, minus what is still in flight. Each call reserves one request and
its estimated tokens (`generation.tokens.estimate_tokens`: the one input estimate plus
`max_completion_tokens`, as the vendor counts before answering) before it is sent, and waits while
either bucket is short.
Answers arrive out of order and the vendor may admit concurrent calls in another order than they were
sent, so a response's `remaining` is trusted only less every call that overlapped it.
Until the first response has arrived only one call is in flight (a probe).

A vendor that sends no such headers (vLLM, Ollama, most proxies) is paced two other ways:
- a configured cap (`vendors.<name>.limits` in governance.yml: requests_per_minute, tokens_per_minute)
  fills both buckets from the start (a minute's budget, refilled at the cap) and is never exceeded;
- the 429s themselves: a 429 without rate-limit headers empties the request bucket (the vendor says
  nothing is left) and sets its refill rate to what the vendor admitted over the last seconds (while
  it says "slow down" we are at its cap, so what it lets through is the cap); at most one such cut a
  second, and the rate creeps up again by a few percent a second while calls go through, to follow a
  cap that rises. The 429 itself costs nothing; a unit that got one waits and is sent again.

Who retries what. The SDK keeps retrying what it is good at: 5xx, timeouts and connection errors
(`max_retries` on the client), on the thread that made the call. A 429 is not retried by the SDK
(the provider marks 429 answers `x-should-retry: false` before the SDK looks at them) but by the
caller through this limiter, because a 429 means "the account is going too fast", not "this request
failed": the SDK would sleep only the thread that got it while the others keep sending into the same
exhausted budget, and its re-send would bypass the token reservation. Here a 429 sets a cool-down
shared by every thread (`retry-after-ms`, else `retry-after`, else the reset of the exhausted
resource, else a growing back-off); the unit is then sent again through `acquire`, with its own
retry budget. So no 429 is retried twice by two layers.
"""

from __future__ import annotations

import email.utils
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: Refuse to wait longer than this for a shared cool-down: the unit fails as `rate_limit` instead.
DEFAULT_MAX_WAIT_S = 120.0
_DEFAULT_BACKOFF_S = 1.0
_POLL_S = 0.25
#: Learning from 429s without headers: what the vendor admitted over this many seconds is its cap.
_ADMITTED_WINDOW_S = 3.0
#: At most one cut of the learned rate this often (the other 429s of one overshoot say the same thing).
_CUT_EVERY_S = 1.0
#: While calls go through, the learned rate rises by this share a second (to follow a cap that rises).
_RISE_PER_S = 0.02
#: A cut sets the rate a little under what was admitted, so the vendor's own budget can refill.
_CUT_TO = 0.97
#: Resets are written to the millisecond; shorter ones say too little about the refill rate.
_PRECISE_RESET_S = 0.05

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str | None) -> float | None:
    """Seconds in a vendor duration: Go style ("1s", "6m0s", "1m30.5s", "20ms") or a bare number of seconds.

    Returns None for a missing or unreadable value (never raises: a header is advice, not input).
    """
    if text is None:
        return None
    value = text.strip().lower()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    total, position = 0.0, 0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return total if position == len(value) and position > 0 else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # a plain dict with other casing (httpx headers are case-insensitive already)
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        number = float(text.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the vendor asked to wait: `retry-after-ms`, else `retry-after` (seconds or an HTTP date)."""
    milliseconds = _number(_header(headers, "retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    raw = _header(headers, "retry-after")
    seconds = _number(raw)
    if seconds is not None or raw is None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class RateLimitHeaders:
    """The x-ratelimit-* headers of one response (None where a header is missing or unreadable)."""

    limit_requests: float | None = None
    remaining_requests: float | None = None
    reset_requests: float | None = None
    limit_tokens: float | None = None
    remaining_tokens: float | None = None
    reset_tokens: float | None = None

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> RateLimitHeaders:
        def get(kind: str, resource: str) -> str | None:
            return _header(headers, f"x-ratelimit-{kind}-{resource}")

        return cls(
            limit_requests=_number(get("limit", "requests")),
            remaining_requests=_number(get("remaining", "requests")),
            reset_requests=parse_duration(get("reset", "requests")),
            limit_tokens=_number(get("limit", "tokens")),
            remaining_tokens=_number(get("remaining", "tokens")),
            reset_tokens=parse_duration(get("reset", "tokens")),
        )

    @property
    def present(self) -> bool:
        return self.limit_requests is not None or self.limit_tokens is not None

    def exhausted_reset(self) -> float | None:
        """The longest reset among resources with nothing left (a fallback wait after a 429)."""
        waits = [
            reset
            for remaining, reset in (
                (self.remaining_requests, self.reset_requests),
                (self.remaining_tokens, self.reset_tokens),
            )
            if remaining is not None and remaining < 1 and reset is not None
        ]
        return max(waits) if waits else None


class RateLimitWaitTooLong(Exception):
    """The vendor asked every caller to wait longer than the limiter is willing to."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the vendor asked to wait {seconds:.0f} s before the next request")
        self.seconds = seconds


class LimiterStopped(Exception):
    """`acquire` was interrupted by the caller's stop event: nothing was reserved."""


@dataclass(frozen=True)
class Ticket:
    """One admitted call: what it reserved, and when it was let through."""

    number: int
    tokens: int
    sent_at: float


class _Bucket:
    """What is left of one resource (requests or tokens), refilled continuously at a learned rate."""

    def __init__(self) -> None:
        self.limit: float | None = None
        self.level = 0.0
        self.rate = 0.0
        self._rate_at_least = 0.0  # the best lower bound of the refill rate the headers have given
        self._updated = 0.0

    def refill(self, now: float) -> None:
        if self.limit is not None:
            self.level = min(self.limit, self.level + self.rate * max(0.0, now - self._updated))
        self._updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (a call larger than the whole limit waits for a full bucket)."""
        if self.limit is None:
            return 0.0
        needed = min(amount, self.limit)
        if self.level >= needed:
            return 0.0
        return (needed - self.level) / self.rate if self.rate > 0 else _POLL_S

    def take(self, amount: float) -> None:
        if self.limit is not None:
            self.level -= amount

    def configure(self, per_minute: float, now: float) -> None:
        """A cap we were told (governance.yml): a minute's budget, refilled at the cap, like OpenAI's."""
        self.limit = per_minute
        self.rate = per_minute / 60.0
        self.level = per_minute
        self._updated = now

    def emptied(self, rate: float | None, now: float) -> None:
        """The vendor said "slow down" without saying how much is left: nothing is, and it refills at `rate`.

        The burst is shrunk to one second at that rate: the vendor's budget is evidently smaller than
        the one assumed.
        """
        self.refill(now)
        if rate is not None and rate > 0:
            self.rate = rate
            self.limit = max(1.0, rate)
        if self.limit is not None:
            self.level = min(self.level, 0.0)
        self._updated = now

    def learn(
        self, limit: float | None, remaining: float | None, reset: float | None, pending: float, now: float
    ) -> None:
        if limit is None or remaining is None or limit <= 0:
            return
        if limit != self.limit:
            self._rate_at_least = 0.0  # a new limit (another tier): learn its rate afresh
        self.limit = limit
        if reset is not None and reset >= _PRECISE_RESET_S and remaining < limit:
            # `remaining` is rounded down, so (limit - remaining - 1) / reset never overstates the refill
            # rate; the best such bound seen so far is kept (it tightens as the budget is drawn down).
            self._rate_at_least = max(self._rate_at_least, (limit - remaining - 1) / reset)
        self.rate = max(limit / 60.0, self._rate_at_least)
        self.level = min(limit, remaining) - pending
        self._updated = now


class RateLimiter:
    """Thread-safe admission of vendor calls under the learned requests and tokens per minute.

    Use one per account and model, shared by every thread that calls the vendor:

        ticket = limiter.acquire(estimate_tokens(body), stop=stop_event)
        try:
            response = call()            # the SDK's raw response
        except RateLimitError as exc:     # 429: pause everyone, then send again through acquire()
            limiter.release(ticket, exc.response.headers)
            limiter.rate_limited(exc.response.headers)
        else:
            limiter.release(ticket, response.headers)

    Args:
        max_in_flight: calls allowed in flight at once once the first response has arrived (one before).
        max_wait_s: a shared cool-down longer than this makes `acquire` raise `RateLimitWaitTooLong`.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        max_in_flight: int,
        *,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        for name, value in (("requests_per_minute", requests_per_minute), ("tokens_per_minute", tokens_per_minute)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")
        self.max_in_flight = max_in_flight
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._cond = threading.Condition()
        self._requests = _Bucket()
        self._tokens = _Bucket()
        self._in_flight: dict[int, Ticket] = {}
        self._finished: deque[tuple[Ticket, float]] = deque()  # (ticket, released at), while it may matter
        self._numbers = 0
        self._probed = False  # a first response (with or without headers) has arrived
        self._learned_from = -math.inf  # sent_at of the call whose headers set the levels last
        self._cool_until = 0.0
        self._consecutive_429 = 0
        self.rate_limited_count = 0  # 429s reported through rate_limited()
        # Pacing without headers: the configured caps (ceilings), the learned request rate (per s).
        self._max_requests_per_s = requests_per_minute / 60.0 if requests_per_minute else None
        self._max_tokens_per_s = tokens_per_minute / 60.0 if tokens_per_minute else None
        self._headers_seen = False
        self._admitted: deque[float] = deque()  # when calls went through (for the rate learned from 429s)
        self._first_admitted: float | None = None
        self._last_cut = -math.inf
        self._last_rise = clock()
        now = clock()
        if requests_per_minute:
            self._requests.configure(requests_per_minute, now)
        if tokens_per_minute:
            self._tokens.configure(tokens_per_minute, now)

    # ---- what callers see -------------------------------------------------------------------
    @property
    def learned(self) -> bool:
        """Whether the vendor has sent rate-limit headers (otherwise: the configured cap, or what 429s taught)."""
        with self._cond:
            return self._headers_seen

    @property
    def paced(self) -> bool:
        """Whether calls are paced by a rate at all (headers, a configured cap, or 429s learned from)."""
        with self._cond:
            return self._requests.limit is not None or self._tokens.limit is not None

    def snapshot(self) -> dict[str, float | None]:
        """Limits, levels and rates as the limiter believes them now (for logs and tests; no content)."""
        with self._cond:
            now = self._clock()
            self._requests.refill(now)
            self._tokens.refill(now)
            return {
                "limit_requests": self._requests.limit,
                "requests_per_s": self._requests.rate or None,
                "remaining_requests": self._requests.level if self._requests.limit is not None else None,
                "limit_tokens": self._tokens.limit,
                "tokens_per_s": self._tokens.rate or None,
                "remaining_tokens": self._tokens.level if self._tokens.limit is not None else None,
                "cool_down_s": max(0.0, self._cool_until - now),
                "in_flight": float(len(self._in_flight)),
            }

    # ---- admission --------------------------------------------------------------------------
    def acquire(self, tokens: int, *, stop: threading.Event | None = None) -> Ticket:
        """Block until one request and `tokens` may be sent; reserve them and return the ticket.

        Raises:
            LimiterStopped: `stop` was set while waiting (nothing reserved).
            RateLimitWaitTooLong: a shared cool-down ends further away than `max_wait_s`.
        """
        with self._cond:
            while True:
                if stop is not None and stop.is_set():
                    raise LimiterStopped()
                now = self._clock()
                if self._cool_until > now:
                    if self._cool_until - now > self.max_wait_s:
                        raise RateLimitWaitTooLong(self._cool_until - now)
                    wait = self._cool_until - now
                elif len(self._in_flight) >= (self.max_in_flight if self._probed else 1):
                    wait = _POLL_S  # woken by release()
                else:
                    self._requests.refill(now)
                    self._tokens.refill(now)
                    wait = max(self._requests.wait_for(1), self._tokens.wait_for(tokens))
                    if wait <= 0:
                        self._requests.take(1)
                        self._tokens.take(tokens)
                        self._numbers += 1
                        ticket = Ticket(self._numbers, tokens, now)
                        self._in_flight[ticket.number] = ticket
                        return ticket
                self._cond.wait(min(wait, _POLL_S))

    def release(self, ticket: Ticket, headers: Mapping[str, str] | None = None) -> None:
        """The call is over (answered, failed or timed out); learn from its response headers if any."""
        with self._cond:
            now = self._clock()
            self._in_flight.pop(ticket.number, None)
            self._probed = True
            if headers is not None:
                self._learn(ticket, RateLimitHeaders.parse(headers), now)
            self._finished.append((ticket, now))
            oldest = min((t.sent_at for t in self._in_flight.values()), default=now)
            while self._finished and self._finished[0][1] < oldest:
                self._finished.popleft()
            self._cond.notify_all()

    def _learn(self, ticket: Ticket, seen: RateLimitHeaders, now: float) -> None:
        if not seen.present or ticket.sent_at < self._learned_from:
            return  # an older snapshot than the one already applied (answers arrive out of order)
        self._headers_seen = True
        self._learned_from = ticket.sent_at
        # `remaining` was written when the vendor admitted this call. Any call that overlapped it may
        # have been admitted later, so be counted there or not at all yet: subtract every one of them
        # (in flight, or finished after this one was sent). Safe, and corrected by the next answer.
        overlapping = [t for t in self._in_flight.values() if t.number != ticket.number]
        overlapping += [t for t, released in self._finished if released > ticket.sent_at]
        pending_requests = float(len(overlapping))
        pending_tokens = float(sum(t.tokens for t in overlapping))
        self._requests.learn(seen.limit_requests, seen.remaining_requests, seen.reset_requests, pending_requests, now)
        self._tokens.learn(seen.limit_tokens, seen.remaining_tokens, seen.reset_tokens, pending_tokens, now)
        for bucket, ceiling in ((self._requests, self._max_requests_per_s), (self._tokens, self._max_tokens_per_s)):
            if ceiling is not None and bucket.rate > ceiling:
                bucket.rate = ceiling  # the configured cap is never exceeded, whatever the headers say

    def rate_limited(self, headers: Mapping[str, str] | None = None) -> float:
        """A 429 (other than quota): pause every caller; return the pause in seconds.

        The pause is the vendor's `retry-after-ms` / `retry-after`, else the reset of the exhausted
        resource. A 429 without rate-limit headers also teaches the rate (see the module docstring):
        the request bucket is emptied and refills at what the vendor admitted lately, so the pause is
        the pacing itself; only when nothing has been admitted yet to learn from, a back-off that
        doubles with each 429 in a row (1 s, 2 s, 4 s ... 60 s) is used.
        """
        with self._cond:
            now = self._clock()
            self.rate_limited_count += 1
            self._consecutive_429 += 1
            asked = retry_after(headers) if headers is not None else None
            seen = RateLimitHeaders.parse(headers) if headers is not None else RateLimitHeaders()
            if asked is None:
                asked = seen.exhausted_reset()
            if not seen.present:
                learned = self._slow_down(now)
                if asked is None and learned is not None:
                    asked = 0.0  # the emptied bucket paces the next calls
            if asked is None:
                asked = min(60.0, _DEFAULT_BACKOFF_S * 2 ** (self._consecutive_429 - 1))
            self._cool_until = max(self._cool_until, now + asked)
            self._cond.notify_all()
            return asked

    def _slow_down(self, now: float) -> float | None:
        """Learn from a 429 without headers: empty the request bucket, refilled at the admitted rate.

        Returns the request rate (per second) now used, or None when there is nothing to learn from yet.
        """
        while self._admitted and self._admitted[0] < now - _ADMITTED_WINDOW_S:
            self._admitted.popleft()
        current = self._requests.rate if self._requests.limit is not None else None
        if now - self._last_cut < _CUT_EVERY_S:
            self._requests.emptied(None, now)  # the same overshoot: keep the rate, empty the bucket
            return current
        if self._first_admitted is None:
            return current
        span = min(_ADMITTED_WINDOW_S, now - self._first_admitted)
        if span <= 0 or not self._admitted:
            return current
        admitted = len(self._admitted) / max(span, 1.0 / len(self._admitted))
        rate = _CUT_TO * admitted if current is None else min(current, _CUT_TO * admitted)
        if current is not None and rate < current * 0.5:
            rate = current * 0.5  # a sparse window says little: never more than halve at once
        if self._max_requests_per_s is not None:
            rate = min(rate, self._max_requests_per_s)
        self._last_cut = now
        self._last_rise = now
        self._requests.emptied(rate, now)
        if self._tokens.limit is not None:
            self._tokens.emptied(None, now)
        return rate

    def succeeded(self) -> None:
        """A call went through: the next 429 starts the back-off afresh, and a learned rate may rise."""
        with self._cond:
            now = self._clock()
            self._consecutive_429 = 0
            self._admitted.append(now)
            if self._first_admitted is None:
                self._first_admitted = now
            while self._admitted and self._admitted[0] < now - _ADMITTED_WINDOW_S:
                self._admitted.popleft()
            if self._headers_seen or self._last_cut == -math.inf:
                return
            elapsed, self._last_rise = now - self._last_rise, now
            self._requests.refill(now)
            rate = self._requests.rate * (1 + _RISE_PER_S * elapsed)
            if self._max_requests_per_s is not None:
                rate = min(rate, self._max_requests_per_s)
            self._requests.rate = rate
            self._requests.limit = max(1.0, rate)

    def wake(self) -> None:
        """Wake every waiting caller (after setting its stop event)."""
        with self._cond:
            self._cond.notify_all()

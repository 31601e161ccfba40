"""The per-minute cap on a simulated clock: never more than the cap in any 60-second window, and
pauses (a chunk's ledger writes) made up so the pace stays near the cap."""

from __future__ import annotations

from governed_marketing.delivery.sender import PerMinuteCap


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_no_window_exceeds_the_cap_and_pauses_are_made_up():
    clock = FakeClock()
    cap = PerMinuteCap(600, clock=clock, sleep=clock.sleep)
    sends = []
    for i in range(3000):
        if i % 10 == 0:
            clock.now += 0.5  # the ledger writes between chunks
        cap.wait()
        sends.append(clock.now)
    for start in range(0, len(sends), 50):
        window_end = sends[start] + 60
        assert sum(1 for t in sends[start:] if t < window_end) <= 600
    rate_per_minute = len(sends) / (sends[-1] - sends[0]) * 60
    assert rate_per_minute >= 0.9 * 600


def test_no_cap_never_waits():
    clock = FakeClock()
    cap = PerMinuteCap(None, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        cap.wait()
    assert clock.now == 0.0

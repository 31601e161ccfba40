"""`gmp run`'s stop: whoever sets the flag (our SIGTERM watcher, or an operator's on_kill under Airflow's
own SIGTERM handler), the main thread is interrupted once code that stops by itself has stopped."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from governed_marketing import stopping


@pytest.fixture(autouse=True)
def _clean_flag():
    stopping.reset()
    yield
    stopping.reset()


def _wait_in_main_thread(seconds: float) -> float:
    """What dag.test() does between tries: sleep in short steps. Returns when it was interrupted."""
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        while time.monotonic() - started < seconds:
            time.sleep(0.05)
    return time.monotonic() - started


def test_the_main_thread_is_interrupted_even_where_sigint_was_ignored():
    """A parent that ignores SIGINT passes SIG_IGN on to `gmp run`; interrupt_main() would do nothing."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stopping.sigterm_stops_the_run():
            threading.Timer(0.3, stopping.request_stop).start()
            assert _wait_in_main_thread(30) < 10
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # put back as it was
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_flag_set_by_on_kill_interrupts_the_main_thread():
    """The SIGTERM went to Airflow's handler, not to our wakeup fd: the flag alone must end the pass."""
    with stopping.sigterm_stops_the_run():
        threading.Timer(0.3, stopping.request_stop, args=("SIGTERM (on_kill)",)).start()
        waited = _wait_in_main_thread(30)
    assert waited < 10 and stopping.stop_reason() == "SIGTERM (on_kill)"


def test_sigterm_interrupts_the_main_thread_after_code_that_stops_by_itself_has_stopped():
    done = threading.Event()

    def drafting() -> None:  # a worker that polls the flag and winds down in its own time
        with stopping.stops_by_itself():
            while not stopping.stop_requested():
                time.sleep(0.01)
            time.sleep(0.5)
        done.set()

    with stopping.sigterm_stops_the_run():
        threading.Thread(target=drafting).start()
        threading.Timer(0.3, os.kill, args=(os.getpid(), signal.SIGTERM)).start()
        _wait_in_main_thread(30)
    assert done.is_set(), "the main thread was interrupted before drafting had stopped by itself"
    assert stopping.stop_reason() == "SIGTERM"

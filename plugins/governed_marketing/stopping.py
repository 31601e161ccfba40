"""Stopping a run on SIGTERM: how Airflow and `timeout` end a task, and how `gmp run` is stopped.

One process-wide flag. Whoever learns of the signal sets it (`request_stop`): the `gmp run` watcher
(a wakeup fd, so it hears SIGTERM even while Airflow's task runner has put its own handler in
place), or an operator's `on_kill`, which is what Airflow's task runner calls on SIGTERM. Code that
can stop cleanly by itself polls it: the sync drafting loop stops submitting, records what is in
flight in the ledger, and raises. `gmp run` then interrupts whatever the main thread is still doing
(an Airflow retry wait, a dbt build) so the process exits at once instead of finishing the pass.
"""

from __future__ import annotations

import _thread
import contextlib
import fcntl
import os
import signal
import threading
import time
from collections.abc import Iterator

_STOP = threading.Event()
_reason = ""
_stops_by_itself = 0  # code currently running that stops cleanly on the flag (do not interrupt it)
_lock = threading.Lock()
#: How long code that stops by itself is given before the main thread is interrupted anyway.
GRACE_S = 20.0


class RunInterrupted(RuntimeError):
    """The run was asked to stop (SIGTERM) and stopped; what was in flight is in the ledger.

    Not retryable: a retry in the process that was asked to stop would only stop again (and Airflow
    would wait for it); the next run sends the in-doubt units again under the same key.
    """

    retryable = False


def request_stop(reason: str = "SIGTERM") -> None:
    """Ask everything running in this process to stop submitting work and return."""
    global _reason
    with _lock:
        if not _STOP.is_set():
            _reason = reason
        _STOP.set()


def stop_requested() -> bool:
    return _STOP.is_set()


def stop_reason() -> str:
    return _reason or "a stop request"


def reset() -> None:
    """Clear the flag (tests, and a long-lived process starting another run)."""
    global _reason
    with _lock:
        _STOP.clear()
        _reason = ""


@contextlib.contextmanager
def stops_by_itself() -> Iterator[None]:
    """Mark code that polls the flag and winds down cleanly: the SIGTERM watcher waits for it."""
    global _stops_by_itself
    with _lock:
        _stops_by_itself += 1
    try:
        yield
    finally:
        with _lock:
            _stops_by_itself -= 1


def _busy() -> bool:
    with _lock:
        return _stops_by_itself > 0


@contextlib.contextmanager
def sigterm_stops_the_run() -> Iterator[None]:
    """While the block runs (on the main thread), SIGTERM stops it promptly.

    SIGTERM sets the flag (or an operator's `on_kill` does, under Airflow's own handler); code that
    stops by itself is given up to GRACE_S to do so; then the main thread is interrupted
    (KeyboardInterrupt, repeated until the block has been left), which ends `dag.test()` wherever it
    is, an Airflow retry wait included. The caller turns that into `RunInterrupted`.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()
    for fd in (read_fd, write_fd):
        os.set_blocking(fd, False)
        fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
    left = threading.Event()

    def on_sigterm(signum: int, frame: object) -> None:
        request_stop("SIGTERM")

    def watch() -> None:
        # The flag may be set without our wakeup fd hearing the signal: Airflow's task runner puts its own
        # SIGTERM handler in place and calls the operator's on_kill, which sets it (CI saw a pass that
        # then waited on the drafting task's Airflow retries for good). Either way the pass must end.
        while not left.is_set() and not _STOP.is_set():
            try:
                data = os.read(read_fd, 64)
            except BlockingIOError:
                left.wait(0.05)
                continue
            except OSError:
                return
            if signal.SIGTERM in data:
                request_stop("SIGTERM")
        if left.is_set():
            return
        deadline = time.monotonic() + GRACE_S
        while _busy() and time.monotonic() < deadline and not left.is_set():
            left.wait(0.05)
        while not left.is_set():
            _thread.interrupt_main()
            left.wait(0.5)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    # interrupt_main() runs the SIGINT handler: make it raise KeyboardInterrupt here, whatever this process
    # inherited (a parent that ignores SIGINT passes SIG_IGN on) or was given by a library.
    previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, name="gmp-sigterm", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        left.set()
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_sigint)
        watcher.join(timeout=1)
        os.close(read_fd)
        os.close(write_fd)

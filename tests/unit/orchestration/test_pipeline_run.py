"""One writing command at a time per GMP_HOME: $GMP_HOME/run.lock, tried with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from governed_marketing.orchestration.pipeline_run import RunLocked, run_lock
from governed_marketing.settings import Settings

from tests.conftest import PROJECT_ROOT

GMP = Path(sys.executable).with_name("gmp")

HOLDER = textwrap.dedent(
    """
    import sys, time
    from governed_marketing.orchestration.pipeline_run import run_lock
    from governed_marketing.settings import Settings

    with run_lock(Settings(), "gmp run --crm /data/export"):
        print("held", flush=True)
        time.sleep(120)
    """
)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GMP_", "OPENAI_", "AIRFLOW"))}
    return {**env, "GMP_HOME": str(home), "GMP_PSEUDONYM_KEY": "unit-pseudonym-key-0123456789abcdef"}


@pytest.fixture
def holder(tmp_path: Path):
    home = tmp_path / "home"
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER], env=_env(home), stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    yield home, process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_a_second_gmp_run_exits_at_once_with_one_line_naming_the_holder(holder, tmp_path: Path) -> None:
    home, process = holder

    export = PROJECT_ROOT / "tests" / "fixtures" / "external_crm"  # a readable export: the lock must stop it
    second = subprocess.run(
        [str(GMP), "run", "--crm", str(export)],
        env={**_env(home), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
    )

    assert second.returncode == 1
    message = second.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert f"pid {process.pid}" in message and "`gmp run --crm /data/export`" in message and "since" in message
    assert str(home / "run.lock") in message
    assert "Traceback" not in second.stdout + second.stderr
    assert not (home / "airflow").exists(), "nothing of the second run touched the Airflow metadata DB"


def test_the_lock_is_released_when_its_holder_dies(holder) -> None:
    home, process = holder
    settings = Settings(home=home)
    with pytest.raises(RunLocked), run_lock(settings, "gmp run"):
        pass

    process.send_signal(signal.SIGKILL)  # no cleanup at all: the kernel drops the flock
    process.wait()

    with run_lock(settings, "gmp run") as path:
        assert f"pid {os.getpid()}" in path.read_text()
    assert path.read_text() == ""  # released: no stale holder left in the file

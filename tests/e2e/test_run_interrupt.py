"""Two `gmp run` on one GMP_HOME, and SIGTERM mid-drafting: real processes, a slow local vendor.

The first run is stopped while its drafts are with the vendor (SIGTERM, as Airflow and `timeout`
stop a task). A second run started meanwhile is refused at once by the run lock, naming the first.
After the SIGTERM the ledger records the units that were in flight as in doubt; the next run sends
them again under the same Idempotency-Key and its summary says how many were in doubt.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import duckdb
import pytest
from governed_marketing.sample_data.crm_export import SAMPLE_AS_OF

from tests.conftest import PROJECT_ROOT
from tests.e2e.conftest import GMP, TEST_KEY, run_gmp
from tests.support.openai_server import LocalOpenAIServer

pytestmark = pytest.mark.e2e


def _env(home, vendor: LocalOpenAIServer) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "GMP_", "OPENAI_", "PYTEST", "DBT_TARGET"))
    }
    env.update(
        {
            "GMP_HOME": str(home),
            "GMP_PSEUDONYM_KEY": TEST_KEY,
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            "COLUMNS": "160",
            "GMP_LLM_PROVIDER": "openai",
            "OPENAI_BASE_URL": vendor.base_url,
            "OPENAI_API_KEY": "sk-test",
        }
    )
    return env


def _wait_for_drafting(vendor: LocalOpenAIServer, process: subprocess.Popen, limit_s: float = 900) -> None:
    deadline = time.monotonic() + limit_s
    while len(vendor.chat_requests()) < 2:
        if process.poll() is not None:
            pytest.fail(f"gmp run ended (exit {process.returncode}) before drafting started")
        if time.monotonic() > deadline:
            pytest.fail("gmp run did not reach drafting")
        time.sleep(0.2)


def test_sigterm_mid_drafting_records_in_doubt_units_and_a_second_run_is_refused_by_the_lock(
    tmp_path, sample_export, capsys
):
    home = tmp_path / "home"
    args = ["run", "--crm", str(sample_export), "--as-of", SAMPLE_AS_OF.isoformat()]
    with LocalOpenAIServer(latency_s=5.0) as vendor:
        env = _env(home, vendor)
        out, err = (tmp_path / "first.out").open("w"), (tmp_path / "first.err").open("w")
        first = subprocess.Popen([str(GMP), *args], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=err)
        try:
            _wait_for_drafting(vendor, first)

            # A second run on the same GMP_HOME: refused at once, in one line naming the holder.
            second = run_gmp(home, *args, extra_env={k: env[k] for k in env if k.startswith(("GMP_LLM", "OPENAI"))})
            assert second.result.returncode != 0
            message = second.result.stderr.strip()
            assert len(message.splitlines()) == 1, message
            assert f"pid {first.pid}" in message and "run.lock" in message and "gmp run" in message
            assert "Traceback" not in second.result.stdout + second.result.stderr

            sent_before_term = {r.headers["idempotency-key"] for r in vendor.chat_requests()}
            signalled = time.monotonic()
            first.send_signal(signal.SIGTERM)
            try:
                first.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail("gmp run did not exit within 60 s of SIGTERM")
            exit_after_s = time.monotonic() - signalled
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
            out.close()
            err.close()
        with capsys.disabled():
            print(f"\nSIGTERM to exit: {exit_after_s:.2f} s")
        stderr = (tmp_path / "first.err").read_text()
        assert first.returncode == 143, stderr
        assert "in doubt" in stderr and "Traceback" not in stderr

        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
            rows = conn.execute("select status, custom_id, shared_request_of from ops.generation_ledger").fetchall()
        statuses = [status for status, _, _ in rows]
        assert "submitted" not in statuses
        in_doubt = [(cid, shared) for status, cid, shared in rows if status == "in_doubt"]
        assert in_doubt, "the units with the vendor at SIGTERM are recorded as in doubt"
        sent = {r.headers["idempotency-key"] for r in vendor.chat_requests()}
        assert all(f"{shared or cid}-1" in sent for cid, shared in in_doubt), "only what was sent is in doubt"
        assert len(sent - sent_before_term) <= 8, "no new request went out after SIGTERM beyond those already admitted"

        # The next run sends them again under the same key (paid once) and says how many were in doubt.
        vendor.latency_s = 0.0
        third = run_gmp(home, *args, extra_env={k: env[k] for k in env if k.startswith(("GMP_LLM", "OPENAI"))})
        assert third.ok, third.result.stdout + third.result.stderr
        assert "units in doubt" in third.result.stdout
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
            paying = conn.execute(
                "select count(*) from ops.generation_ledger where shared_request_of is null"
            ).fetchone()[0]
        assert vendor.paid_requests == paying, "an in-doubt unit was paid twice"

"""One successful `gmp run` through the openai provider (the local server), shared by the report tests.

The run costs most of a minute; the gates-and-report tests and the browser test both read it, so it
is made once per test session whichever of them asks first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from governed_marketing.sample_data.crm_export import SAMPLE_AS_OF

from tests.e2e.conftest import Run, run_gmp
from tests.support.openai_server import LocalOpenAIServer, RecordedRequest

_RUNS: dict[str, SharedRun] = {}


@dataclass
class SharedRun:
    run: Run
    vendor_requests: list[RecordedRequest]

    @property
    def reports(self) -> Path:
        return self.run.home / "reports"


def successful_run(tmp_path_factory, sample_export: Path) -> SharedRun:
    """The sample export through every DAG with the openai provider; fails the caller if the run fails."""
    if "ok" not in _RUNS:
        home = tmp_path_factory.mktemp("gmp-report")
        with LocalOpenAIServer() as vendor:
            env = {"GMP_LLM_PROVIDER": "openai", "OPENAI_BASE_URL": vendor.base_url, "OPENAI_API_KEY": "sk-test"}
            run = run_gmp(home, "run", "--crm", str(sample_export), "--as-of", SAMPLE_AS_OF.isoformat(), extra_env=env)
            _RUNS["ok"] = SharedRun(run=run, vendor_requests=vendor.chat_requests())
    shared = _RUNS["ok"]
    assert shared.run.ok, shared.run.result.stdout + shared.run.result.stderr
    return shared

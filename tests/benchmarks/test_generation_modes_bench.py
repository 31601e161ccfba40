"""Vendor requests and tokens per 1,000 recipients: cohort mode against individual mode (`make bench`).

One warehouse (a generated export, ingested, dbt models built) and the real SDK against the local
OpenAI-compatible server. Each mode drafts the same campaign on its own copy of the warehouse; the
server counts what was paid. Figures go to bench/results.json under "generation_modes".

    GMP_BENCH_MODE_CONTACTS=5000 uv run pytest -m benchmark tests/benchmarks/test_generation_modes_bench.py -s
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import openai
import pytest
from governed_marketing.warehouse import connect as warehouse_connect

from tests.benchmarks.conftest import record
from tests.support.built_warehouse import build_home
from tests.support.openai_server import LocalOpenAIServer

pytestmark = pytest.mark.benchmark

CONTACTS = int(os.environ.get("GMP_BENCH_MODE_CONTACTS", "5000"))
AS_OF = "2026-11-15T12:00:00"
CAMPAIGN = "spring_newsletter"


def _run_mode(warehouse: Path, mode: str, server: LocalOpenAIServer, outbox: Path) -> dict:
    from governed_marketing.generation.run import run_campaign
    from governed_marketing.generation.transports.sync import OpenAIProvider
    from governed_marketing.policy import load_policy
    from governed_marketing.runs import parse_as_of

    policy = load_policy()
    campaign = policy.campaigns[CAMPAIGN].model_copy(update={"personalization": mode, "budget_usd": None})
    policy = policy.model_copy(update={"campaigns": {**policy.campaigns, CAMPAIGN: campaign}})
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-bench", max_retries=2)
    provider = OpenAIProvider(
        client,
        "gpt-4.1-mini",
        8,
        max_body_chars=policy.content.max_body_chars,
        max_output_tokens=policy.vendors["openai"].max_output_tokens,
    )
    paid_before, tokens_before = server.paid_requests, server.paid_tokens
    with warehouse_connect(warehouse) as conn:
        outcome = run_campaign(
            CAMPAIGN,
            conn=conn,
            policy=policy,
            provider=provider,
            as_of=parse_as_of(AS_OF),
            run_id=f"bench-{mode}",
            outbox_root=outbox,
        )
    requests = server.paid_requests - paid_before
    per_thousand = 1000 / max(outcome.messages, 1)
    return {
        "recipients": outcome.messages,
        "vendor_requests": requests,
        "input_tokens": outcome.input_tokens,
        "output_tokens": outcome.output_tokens,
        "server_counted_tokens": server.paid_tokens - tokens_before,
        "cost_usd": outcome.cost_usd,
        "requests_per_1000_recipients": round(requests * per_thousand, 1),
        "tokens_per_1000_recipients": round((outcome.input_tokens + outcome.output_tokens) * per_thousand),
        "cost_usd_per_1000_recipients": round(outcome.cost_usd * per_thousand, 4),
    }


def test_bench_cohort_vs_individual_requests_and_tokens(tmp_path_factory):
    home = build_home(tmp_path_factory.mktemp("modes"), contacts=CONTACTS, seed=3, as_of=AS_OF)
    figures: dict[str, dict] = {}
    with LocalOpenAIServer() as server:
        for mode in ("cohort", "individual"):
            copy = tmp_path_factory.mktemp(mode) / "warehouse.duckdb"
            shutil.copy(home / "warehouse.duckdb", copy)
            figures[mode] = _run_mode(copy, mode, server, copy.parent / "outbox")
    cohort, individual = figures["cohort"], figures["individual"]
    assert cohort["recipients"] == individual["recipients"] > 0, "both modes reach the same audience"
    record(
        "generation_modes",
        {
            "contacts": CONTACTS,
            **figures,
            "individual_over_cohort_requests": round(individual["vendor_requests"] / cohort["vendor_requests"], 1),
            "individual_over_cohort_tokens": round(
                (individual["input_tokens"] + individual["output_tokens"])
                / (cohort["input_tokens"] + cohort["output_tokens"]),
                1,
            ),
        },
    )
    print(figures)

"""Throughput of the sync transport under a vendor rate limit: how much of the cap the limiter uses.

The local server is capped at RPM requests and TPM tokens a minute, enforced over a 5-s window (so a
run takes seconds, not minutes) with LATENCY_S of vendor time per answer. UNITS drafts go through
(a) `OpenAIProvider` (limiter, 8 threads) and (b) a plain sequential loop over the same request
bodies with the bare SDK. A share of the cap is what the server admitted divided by the most the cap
admits over the same span (the full budget at the start plus the refill): 1.0 is the cap exactly.
Figures (medians of GMP_BENCH_REPEATS runs) go to bench/results.json under "sync_throughput".
Nothing here asserts a time.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import openai
import pytest
from governed_marketing.generation.base import DraftFailure, DraftRequest
from governed_marketing.generation.ledger import custom_id
from governed_marketing.generation.providers import OpenAIProvider, completion_body

from tests.benchmarks.conftest import REPEATS, record
from tests.support.openai_server import LocalOpenAIServer

pytestmark = pytest.mark.benchmark

UNITS = int(os.environ.get("GMP_BENCH_SYNC_UNITS", "200"))
RPM = 720  # 12 requests a second
TPM = 300_000  # about 1.1 x what 720 requests of this size count: both limits nearly bind
WINDOW_S = 5.0
LATENCY_S = 0.1
CONCURRENCY = 8
MAX_OUTPUT_TOKENS = 200
MODEL = "gpt-4.1-mini"


def _requests(n: int) -> list[DraftRequest]:
    return [
        DraftRequest(
            campaign_id="spring_newsletter",
            unit_id=f"cohort-{i:04d}",
            prompt_version="newsletter_v1",
            system_prompt="You write short, friendly marketing emails for Example Shop. " * 4,
            language="de",
            attributes={"country": "DE", "lifecycle_stage": "customer", "interests": f"running;yoga;topic {i}"},
            custom_id=custom_id("spring_newsletter", f"cohort-{i:04d}", "newsletter_v1", MODEL),
        )
        for i in range(n)
    ]


def _client(server: LocalOpenAIServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="sk-local-bench", max_retries=3, timeout=30)


def _share(server: LocalOpenAIServer) -> dict[str, float]:
    """Admitted requests and tokens as a share of what the cap admits between the first and last admission."""
    accepted = server.accepted()
    span = accepted[-1][0] - accepted[0][0]
    requests, tokens = len(accepted), sum(t for _, t in accepted)
    request_cap = RPM * WINDOW_S / 60 + RPM / 60 * span
    token_cap = TPM * WINDOW_S / 60 + TPM / 60 * span
    after_burst = [(t, n) for t, n in accepted if t > accepted[0][0] + WINDOW_S]
    steady_span = span - WINDOW_S
    return {
        "requests_share_of_cap": requests / request_cap,
        "tokens_share_of_cap": tokens / token_cap,
        "steady_requests_share_of_cap": (len(after_burst) / steady_span * 60 / RPM) if steady_span > 1 else 0.0,
        "steady_tokens_share_of_cap": (sum(n for _, n in after_burst) / steady_span * 60 / TPM)
        if steady_span > 1
        else 0.0,
    }


def _limited_run() -> dict[str, float]:
    requests = _requests(UNITS)
    failures: dict[str, DraftFailure] = {}
    with LocalOpenAIServer(rpm=RPM, tpm=TPM, window_s=WINDOW_S, latency_s=LATENCY_S) as server:
        provider = OpenAIProvider(_client(server), MODEL, CONCURRENCY, max_output_tokens=MAX_OUTPUT_TOKENS)
        start = time.perf_counter()
        results = provider.draft_many(requests, on_failure=lambda r, f: failures.__setitem__(r.unit_id, f))
        wall = time.perf_counter() - start
        return {
            **_share(server),
            "wall_s": wall,
            "units_lost": UNITS - len(results) - len(failures),
            "units_failed": len(failures),
            "http_429_seen": server.rate_limited,
            "paid_requests": server.paid_requests,
        }


def _sequential_run() -> dict[str, float]:
    requests = _requests(UNITS)
    with LocalOpenAIServer(rpm=RPM, tpm=TPM, window_s=WINDOW_S, latency_s=LATENCY_S) as server:
        client = _client(server)
        bodies: list[dict[str, Any]] = [
            completion_body(r, model=MODEL, max_output_tokens=MAX_OUTPUT_TOKENS) for r in requests
        ]
        start = time.perf_counter()
        answered = sum(1 for body in bodies if client.chat.completions.create(**body).choices)
        wall = time.perf_counter() - start
        return {**_share(server), "wall_s": wall, "units_lost": UNITS - answered, "http_429_seen": server.rate_limited}


def _median(runs: list[dict[str, float]], key: str, digits: int = 3) -> float:
    return round(statistics.median(run[key] for run in runs), digits)


def test_bench_sync_throughput_under_a_rate_limit() -> None:
    limited = [_limited_run() for _ in range(REPEATS)]
    sequential = [_sequential_run() for _ in range(REPEATS)]

    figures = {
        "units": UNITS,
        "repeats": REPEATS,
        "cap": {"rpm": RPM, "tpm": TPM, "window_s": WINDOW_S, "latency_s": LATENCY_S},
        "concurrency": CONCURRENCY,
        "requests_share_of_cap": _median(limited, "requests_share_of_cap"),
        "tokens_share_of_cap": _median(limited, "tokens_share_of_cap"),
        "steady_requests_share_of_cap": _median(limited, "steady_requests_share_of_cap"),
        "steady_tokens_share_of_cap": _median(limited, "steady_tokens_share_of_cap"),
        "units_lost": max(run["units_lost"] for run in limited),
        "units_failed": max(run["units_failed"] for run in limited),
        "http_429_seen": _median(limited, "http_429_seen", 0),
        "wall_s": _median(limited, "wall_s", 2),
        "wall_samples_s": [round(run["wall_s"], 2) for run in limited],
        "sequential_requests_share_of_cap": _median(sequential, "requests_share_of_cap"),
        "sequential_tokens_share_of_cap": _median(sequential, "tokens_share_of_cap"),
        "sequential_http_429_seen": _median(sequential, "http_429_seen", 0),
        "sequential_wall_s": _median(sequential, "wall_s", 2),
        "sequential_wall_samples_s": [round(run["wall_s"], 2) for run in sequential],
        "command": "uv run --frozen pytest -m benchmark tests/benchmarks/test_sync_throughput.py",
    }
    record("sync_throughput", figures)

    assert figures["units_lost"] == 0
    assert all(run["paid_requests"] == UNITS for run in limited)

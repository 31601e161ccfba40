"""Throughput of the sync transport under a vendor rate limit: how much of the cap the limiter uses.

The local server is capped at RPM requests and TPM tokens a minute, enforced over a 5-s window (so a
run takes seconds, not minutes) with LATENCY_S of vendor time per answer. UNITS drafts go through
`OpenAIProvider` (limiter, 8 threads) against that server in three ways:
(a) the server sends `x-ratelimit-*` and `retry-after` headers (OpenAI);
(b) it sends none, and answers a bare 429 over the cap (vLLM, Ollama, proxies): the limiter learns
    the rate from the 429s alone;
(c) no headers either, but the cap is configured (governance.yml `vendors.<name>.limits`);
beside (d) a plain cookbook-style loop (the OpenAI cookbook's parallel processor: it is told the cap,
keeps a request and a token budget that refill at it, and pauses after a 429) over the same bodies,
and (e) a plain sequential loop with the bare SDK. A share of the cap is what the server admitted
divided by the most the cap admits over the same span (the full budget at the start plus the
refill): 1.0 is the cap exactly. Figures (medians of GMP_BENCH_REPEATS runs) go to
bench/results.json under "sync_throughput". Nothing here asserts a time.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from governed_marketing.generation.base import DraftFailure, DraftRequest
from governed_marketing.generation.ledger import custom_id
from governed_marketing.generation.request import completion_body
from governed_marketing.generation.tokens import estimate_tokens
from governed_marketing.generation.transports.sync import OpenAIProvider

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


def _limited_run(*, headers: bool = True, configured: bool = False) -> dict[str, float]:
    requests = _requests(UNITS)
    failures: dict[str, DraftFailure] = {}
    caps = {"requests_per_minute": RPM, "tokens_per_minute": TPM} if configured else {}
    with LocalOpenAIServer(rpm=RPM, tpm=TPM, window_s=WINDOW_S, latency_s=LATENCY_S, limit_headers=headers) as server:
        provider = OpenAIProvider(_client(server), MODEL, CONCURRENCY, max_output_tokens=MAX_OUTPUT_TOKENS, **caps)
        start = time.perf_counter()
        results = provider.draft_many(requests, on_failure=lambda r, f: failures.__setitem__(r.unit_id, f))
        wall = time.perf_counter() - start
        return {
            **_share(server),
            "wall_s": wall,
            "units_lost": UNITS - len(results) - len(failures),
            "units_failed": len(failures),
            "units_failed_on_429": sum(1 for f in failures.values() if f.kind == "rate_limit"),
            "http_429_seen": server.rate_limited,
            "paid_requests": server.paid_requests,
        }


def _cookbook_run() -> dict[str, float]:
    """The cookbook's parallel processor, in threads: told the cap, budgets refilled at it, a pause after a 429.

    Its budgets start full at what the server admits at once (the cookbook starts at a minute's
    worth, which is the server's budget when the window is a minute); the 15 s pause after a 429 is
    scaled to the window like everything else (15 s of 60).
    """
    requests = _requests(UNITS)
    bodies = [completion_body(r, model=MODEL, max_output_tokens=MAX_OUTPUT_TOKENS) for r in requests]
    pause_s = 15.0 * WINDOW_S / 60.0
    with LocalOpenAIServer(rpm=RPM, tpm=TPM, window_s=WINDOW_S, latency_s=LATENCY_S) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-local-bench", max_retries=0, timeout=30)
        lock = threading.Lock()
        queue = list(range(len(bodies)))
        done: set[int] = set()
        last_429 = [-1e9]

        def call(index: int) -> None:
            try:
                client.chat.completions.create(**bodies[index])
            except openai.RateLimitError:
                with lock:
                    last_429[0] = time.monotonic()
                    queue.append(index)
                return
            with lock:
                done.add(index)

        request_level, token_level = RPM * WINDOW_S / 60, TPM * WINDOW_S / 60
        updated = time.monotonic()
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=CONCURRENCY * 4) as pool:
            while len(done) < len(bodies):
                now = time.monotonic()
                request_level = min(RPM * WINDOW_S / 60, request_level + RPM / 60 * (now - updated))
                token_level = min(TPM * WINDOW_S / 60, token_level + TPM / 60 * (now - updated))
                updated = now
                with lock:
                    index = queue.pop(0) if queue else None
                    paused = now - last_429[0] < pause_s
                if index is None or paused:
                    if index is not None:
                        with lock:
                            queue.insert(0, index)
                    time.sleep(0.001)
                    continue
                need = estimate_tokens(bodies[index])
                if request_level >= 1 and token_level >= need:
                    request_level -= 1
                    token_level -= need
                    pool.submit(call, index)
                else:
                    with lock:
                        queue.insert(0, index)
                    time.sleep(0.001)
        wall = time.perf_counter() - start
        return {
            **_share(server),
            "wall_s": wall,
            "units_lost": UNITS - len(done),
            "http_429_seen": server.rate_limited,
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


def _figures(runs: list[dict[str, float]], prefix: str = "") -> dict[str, Any]:
    figures: dict[str, Any] = {
        f"{prefix}requests_share_of_cap": _median(runs, "requests_share_of_cap"),
        f"{prefix}tokens_share_of_cap": _median(runs, "tokens_share_of_cap"),
        f"{prefix}steady_requests_share_of_cap": _median(runs, "steady_requests_share_of_cap"),
        f"{prefix}steady_tokens_share_of_cap": _median(runs, "steady_tokens_share_of_cap"),
        f"{prefix}units_lost": max(run["units_lost"] for run in runs),
        f"{prefix}http_429_seen": _median(runs, "http_429_seen", 0),
        f"{prefix}wall_s": _median(runs, "wall_s", 2),
        f"{prefix}wall_samples_s": [round(run["wall_s"], 2) for run in runs],
    }
    if "units_failed" in runs[0]:
        figures[f"{prefix}units_failed"] = max(run["units_failed"] for run in runs)
        figures[f"{prefix}units_failed_on_429"] = max(run["units_failed_on_429"] for run in runs)
    return figures


def test_bench_sync_throughput_under_a_rate_limit() -> None:
    limited = [_limited_run() for _ in range(REPEATS)]
    no_headers = [_limited_run(headers=False) for _ in range(REPEATS)]
    configured = [_limited_run(headers=False, configured=True) for _ in range(REPEATS)]
    cookbook = [_cookbook_run() for _ in range(REPEATS)]
    sequential = [_sequential_run() for _ in range(REPEATS)]

    figures = {
        "units": UNITS,
        "repeats": REPEATS,
        "cap": {"rpm": RPM, "tpm": TPM, "window_s": WINDOW_S, "latency_s": LATENCY_S},
        "concurrency": CONCURRENCY,
        **_figures(limited),
        **_figures(no_headers, "no_headers_"),
        **_figures(configured, "no_headers_configured_cap_"),
        **_figures(cookbook, "cookbook_"),
        **_figures(sequential, "sequential_"),
        "command": "uv run --frozen pytest -m benchmark tests/benchmarks/test_sync_throughput.py",
    }
    record("sync_throughput", figures)

    for runs in (limited, no_headers, configured):
        assert max(run["units_lost"] for run in runs) == 0
        assert all(run["paid_requests"] == UNITS for run in runs)

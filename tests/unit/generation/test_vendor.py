"""The one client factory: every OpenAI client reads the environment and carries the same retries."""

from __future__ import annotations

import asyncio
import inspect

from governed_marketing.generation import vendor
from governed_marketing.orchestration import batch_trigger


def test_clients_read_the_key_and_base_url_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")

    sync, async_ = vendor.openai_client(), vendor.async_openai_client()

    for client in (sync, async_):
        assert str(client.base_url).startswith("http://127.0.0.1:9/v1")
        assert client.max_retries == vendor.MAX_RETRIES and client.timeout == vendor.TIMEOUT_S
    sync.close()
    asyncio.run(async_.close())


def test_the_trigger_waits_for_the_one_set_of_terminal_statuses() -> None:
    assert batch_trigger.TERMINAL_BATCH_STATUSES is vendor.TERMINAL_BATCH_STATUSES
    assert "async_openai_client()" in inspect.getsource(batch_trigger.OpenAIBatchTrigger.run)

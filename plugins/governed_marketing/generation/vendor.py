"""The OpenAI account as this product reaches it: the one client factory, and the Batch API's end states.

Every client is built here, so timeouts and SDK retries are the same for the sync provider, the
batch flow and the triggerer. OPENAI_API_KEY and OPENAI_BASE_URL come from the environment (never
from settings, never serialized). Light on purpose: the SDK is imported only when a client is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import openai

#: SDK retries of 5xx, timeouts and connection errors (429s are left to the rate limiter).
MAX_RETRIES = 3
TIMEOUT_S = 60.0
#: Batch statuses after which a batch never changes again: collect it.
TERMINAL_BATCH_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})


def openai_client() -> openai.OpenAI:
    """The synchronous client (drafting, batch submit and collect)."""
    import openai

    return openai.OpenAI(max_retries=MAX_RETRIES, timeout=TIMEOUT_S)


def async_openai_client() -> openai.AsyncOpenAI:
    """The asyncio client (the triggerer polls batches with it)."""
    import openai

    return openai.AsyncOpenAI(max_retries=MAX_RETRIES, timeout=TIMEOUT_S)

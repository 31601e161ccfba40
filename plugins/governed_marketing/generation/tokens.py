"""The one token estimate: what a chat.completions body will count, before the vendor has seen it.

There is no tokenizer here: tiktoken downloads its encodings at first use and this product must
run without the internet. The estimate is therefore deliberately pessimistic: one token per three
characters of the messages and the response schema (OpenAI's rule of thumb is four for English)
plus a per-message overhead. The budget check (cost.py) takes it for the input and the full
`max_output_tokens` cap for the answer, so it errs towards refusing; the rate limiter reserves the
same input estimate plus the output cap, as the vendor counts a call against tokens per minute
before it answers, and corrects its level from the vendor's `remaining` on every response.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

CHARS_PER_TOKEN = 3.0
TOKENS_PER_MESSAGE = 4  # role and separators per chat message, plus the reply primer


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """A pessimistic input-token count for a chat.completions body (messages and response schema)."""
    messages = body.get("messages") or []
    text = "".join(str(m.get("content") or "") for m in messages)
    schema = json.dumps(body.get("response_format") or {}, separators=(",", ":"))
    return math.ceil((len(text) + len(schema)) / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * (len(messages) + 1)


def output_cap(body: Mapping[str, Any]) -> int:
    """The most output tokens the body allows (0 when it sets no cap)."""
    return int(body.get("max_completion_tokens") or body.get("max_tokens") or 0)


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """What the call counts against tokens per minute before it is answered: input estimate + output cap."""
    return estimate_input_tokens(body) + output_cap(body)

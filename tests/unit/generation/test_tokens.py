"""The one token estimate: the budget and the rate limiter count a body alike."""

from __future__ import annotations

from governed_marketing.generation.base import DraftRequest
from governed_marketing.generation.request import completion_body
from governed_marketing.generation.tokens import estimate_input_tokens, estimate_tokens


def test_the_input_estimate_is_a_third_of_the_characters_plus_the_message_overhead() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 400}]}

    assert estimate_input_tokens(body) == 134 + 4 * 2  # ceil((400 + len("{}")) / 3), two messages of overhead


def test_the_limiter_reserves_the_same_input_estimate_plus_the_output_cap() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 400}], "max_completion_tokens": 300}

    assert estimate_tokens(body) == estimate_input_tokens(body) + 300
    legacy = {**body, "max_completion_tokens": None, "max_tokens": 50}
    assert estimate_tokens(legacy) == estimate_input_tokens(body) + 50


def test_the_estimate_does_not_undercount_a_real_request_body() -> None:
    request = DraftRequest("c", "u", "v1", "Be brief." * 40, "de", {"interest": "Wandern"}, custom_id="c:u")
    body = completion_body(request, model="m", max_body_chars=1200, max_output_tokens=800)
    text = "".join(m["content"] for m in body["messages"])

    assert estimate_input_tokens(body) > len(text) / 4  # above OpenAI's own four characters a token
    assert estimate_tokens(body) == estimate_input_tokens(body) + 800

"""Fixtures for integration tests: the local OpenAI-compatible server the real SDK talks to."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `tests.support` lives next to the package, not in it; make the repo root importable whatever the
# rootdir or import mode pytest was started with.
_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from tests.support.openai_server import LocalOpenAIServer  # noqa: E402


@pytest.fixture
def openai_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalOpenAIServer]:
    """A running local server; OPENAI_BASE_URL and OPENAI_API_KEY point the SDK at it."""
    with LocalOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-local-test-key")
        yield server

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from governed_marketing import warehouse
from governed_marketing.settings import get_settings, reset_settings

from tests.support import delivery_world
from tests.support.smtp_sink import SinkHandler, SmtpSink


@dataclass
class World:
    home: Path
    conn: warehouse.Warehouse
    sink: SmtpSink

    @property
    def outbox(self) -> Path:
        return self.home / "outbox"


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A fresh GMP_HOME with 6 consenting contacts in two campaigns, and a local SMTP sink."""
    monkeypatch.setenv("GMP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GMP_DELIVERY_KEY", "test-delivery-key-0123456789abcdef0123")
    reset_settings()
    conn = warehouse.connect(get_settings().warehouse_path)
    delivery_world.seed(conn, 6)
    with SmtpSink(SinkHandler()) as sink:
        yield World(get_settings().home_dir, conn, sink)
    conn.close()
    reset_settings()

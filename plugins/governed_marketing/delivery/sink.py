"""The local SMTP sink of `gmp demo`: an aiosmtpd server on 127.0.0.1 that keeps each message as a
.eml file under $GMP_HOME/smtp_sink (owner-only, like everything under GMP_HOME), so the demo's
delivery is real SMTP without mailing the sample's made-up addresses anywhere."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class _SaveToFolder:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.count += 1
        (self.folder / f"{self.count:06d}.eml").write_bytes(envelope.original_content or envelope.content)
        return "250 2.0.0 queued"


@contextmanager
def local_sink(folder: Path) -> Iterator[str]:
    """Start the sink; yield its GMP_SMTP_URL (smtp://127.0.0.1:<port>?security=none)."""
    from aiosmtpd.controller import Controller

    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(_SaveToFolder(folder), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}?security=none"
    finally:
        controller.stop()

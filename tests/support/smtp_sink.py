"""A real local SMTP server (aiosmtpd) standing in for the relay: records what it accepts, and can
answer chosen recipients with a 4xx (once or always) or a 5xx, or slow DATA down."""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import default

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class SinkHandler:
    defer_once: set[str] = field(default_factory=set)  # RCPT answered 451 the first time
    reject: set[str] = field(default_factory=set)  # RCPT answered 550 every time
    defer_always: set[str] = field(default_factory=set)  # RCPT answered 451 every time
    data_delay: float = 0.0
    keep: bool = True  # False: count only (benchmarks)
    accepted: list[bytes] = field(default_factory=list)
    rcpt_attempts: dict[str, int] = field(default_factory=dict)
    count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd's hook name
        with self._lock:
            self.rcpt_attempts[address] = self.rcpt_attempts.get(address, 0) + 1
            attempts = self.rcpt_attempts[address]
        if address in self.reject:
            return "550 5.1.1 mailbox unavailable"
        if address in self.defer_always or (address in self.defer_once and attempts == 1):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        with self._lock:
            self.count += 1
            if self.keep:
                self.accepted.append(envelope.original_content or envelope.content)
        return "250 2.0.0 queued"

    def messages(self) -> list[Message]:
        return [message_from_bytes(data, policy=default) for data in list(self.accepted)]


class SmtpSink:
    """`with SmtpSink() as sink:` a server on 127.0.0.1:<free port>, no TLS, no auth."""

    def __init__(self, handler: SinkHandler | None = None) -> None:
        self.handler = handler or SinkHandler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

"""A real SMTP server (aiosmtpd) in the test process, whose refusals the tests script."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

import dev


@dataclass
class MailServer:
    """What the server received, and how it should misbehave.

    ``refuse_next`` DATA commands are answered with a 451 (try again later), every other one
    of them by dropping the connection instead; ``permanent`` maps an address to the 5xx it
    always gets at RCPT; ``drop_after_accept`` closes the connection right after each 250
    to DATA, before the client's QUIT; ``drop_reused`` connections that already carried a mail
    are closed at their next MAIL instead of answering it.
    """

    port: int = 0
    refuse_next: int = 0
    permanent: dict[str, str] = field(default_factory=dict)
    drop_after_accept: bool = False
    drop_reused: int = 0
    credentials: tuple[str, str] | None = None
    messages: list[tuple[str, Message]] = field(default_factory=list)
    refused: int = 0
    dropped: int = 0
    closed_after_accept: int = 0
    carriers: list[tuple[str, int]] = field(default_factory=list)
    """The client address and port of the connection each accepted mail came over."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def connections(self) -> int:
        """How many connections the accepted mails came over."""
        with self.lock:
            return len(set(self.carriers))

    def received(self) -> Counter[str]:
        """How many mails each recipient got."""
        with self.lock:
            return Counter(recipient for recipient, _ in self.messages)

    # --- aiosmtpd handler hooks

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        with self.lock:
            if self.drop_reused > 0 and tuple(session.peer) in self.carriers:
                self.drop_reused -= 1
                server.transport.close()
                return "421 4.4.2 closing"  # never reaches the client: the connection is gone
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.permanent:
            return self.permanent[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.refuse_next > 0:
                self.refuse_next -= 1
                if self.refuse_next % 2:
                    self.dropped += 1
                    server.transport.close()
                    return "421 closing"  # never reaches the client: the connection is gone
                self.refused += 1
                return "451 4.3.0 Mailbox busy, try again later"
            for recipient in envelope.rcpt_tos:
                self.messages.append((recipient, message_from_bytes(envelope.content)))
                self.carriers.append(tuple(session.peer))
            count = len(self.messages)
        if self.drop_after_accept:
            asyncio.get_running_loop().call_later(0.05, self._close_after_accept, server)
        return f"250 2.0.0 Ok: queued as M{count}"

    def _close_after_accept(self, server) -> None:
        if server.transport is not None:  # None: the client said QUIT first
            server.transport.close()
        with self.lock:
            self.closed_after_accept += 1

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.credentials is not None
            and (auth_data.login.decode(), auth_data.password.decode()) == self.credentials
        )
        return AuthResult(success=ok, handled=False)


@contextmanager
def mail_server(server: MailServer | None = None, **smtp_kwargs) -> Iterator[MailServer]:
    """Run ``server`` (a fresh one by default) on a free port of 127.0.0.1 until the block ends."""
    server = server or MailServer()
    server.port = dev.free_port()
    if server.credentials:
        smtp_kwargs.setdefault("authenticator", server.authenticate)
    controller = Controller(server, hostname="127.0.0.1", port=server.port, **smtp_kwargs)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()

"""One mail, sent over SMTP as ``SMTP_URL`` says; used by newsletter jobs on workers.

``SMTP_URL`` takes three forms::

    smtp://host:25                       plain SMTP (a local relay)
    smtp+starttls://user:pass@host:587   STARTTLS, required: refused if the server does not offer it
    smtps://user:pass@host:465           TLS from the first byte (implicit TLS)

Certificates are verified (against ``SMTP_CA_FILE`` when set, else the system's CAs). The
password never appears in logs, errors or reprs: :attr:`SmtpConfig.display` is the URL
without it.

Every failure is sorted into what retrying can fix (:class:`TransientMailError`: 4xx replies,
refused or dropped connections, timeouts) and what it cannot (:class:`PermanentMailError`:
5xx replies, a server without STARTTLS, an untrusted certificate).

A connection outlives its mail: the next mail sent from the same process to the same server
(a newsletter's jobs run one after another in one job process) goes over it, saving the
connect, TLS handshake, EHLO and login of each. One that sat idle ``REUSE_IDLE_SECONDS``,
carried ``MAILS_PER_CONNECTION`` mails, or was closed by the server meanwhile is replaced;
one found dropped at MAIL or RCPT (nothing of the mail sent yet) is replaced and the mail
sent over the new one.
"""

from __future__ import annotations

import atexit
import os
import select
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import parseaddr
from urllib.parse import unquote, urlsplit

from offload.retries import PermanentError

SCHEMES = {"smtp": ("plain", 25), "smtp+starttls": ("starttls", 587), "smtps": ("tls", 465)}
"""URL scheme → (security, default port)."""

REUSE_IDLE_SECONDS = 30.0
"""A connection idle longer is not reused: servers close idle ones (RFC 5321 allows after 5 min, many sooner)."""

MAILS_PER_CONNECTION = 100
"""Mails sent over one connection before a new one: providers cap mails per session (often at 100)."""


class TransientMailError(Exception):
    """The mail was not accepted, for a reason that may pass (4xx, dropped connection): retry."""


class PermanentMailError(PermanentError):
    """The mail was refused for good (5xx) or cannot be sent as configured: do not retry."""


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to reach the SMTP server; the password stays out of ``repr``."""

    host: str
    port: int
    security: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30
    ca_file: str | None = None

    @classmethod
    def from_url(cls, url: str, timeout: float = 30, ca_file: str | None = None) -> SmtpConfig:
        """Parse ``SMTP_URL``; a ValueError names what is wrong, never the password."""
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise ValueError(f"SMTP_URL must start with one of {', '.join(s + '://' for s in SCHEMES)}")
        if not parts.hostname:
            raise ValueError("SMTP_URL has no host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("SMTP_URL has a malformed port") from None
        security, default_port = SCHEMES[parts.scheme]
        return cls(
            host=parts.hostname,
            port=port or default_port,
            security=security,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            timeout=timeout,
            ca_file=ca_file or None,
        )

    @property
    def display(self) -> str:
        """The URL without the password, for logs and error messages."""
        scheme = next(name for name, (security, _) in SCHEMES.items() if security == self.security)
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def send(config: SmtpConfig, message: EmailMessage, on_accepted: Callable[[str], None]) -> str:
    """Send ``message`` to its one ``To`` address; return the server's reply to DATA.

    ``on_accepted`` is called with that reply as soon as the server accepts the mail (250 to
    DATA): what happens to the connection afterwards cannot undo a delivery. The connection
    stays open for the next mail (:data:`_OPEN`).
    """
    sender, recipient = _address(message["From"]), _address(message["To"])
    payload = message.as_bytes(policy=SMTP_POLICY)
    kept = _take(config)
    smtp, mails = (kept.smtp, kept.mails) if kept else (_connect(config), 0)
    try:
        try:
            _envelope(smtp, sender, recipient)
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPSenderRefused, OSError) as exc:
            if kept is None or not _dropped(exc):
                raise
            # The server dropped the reused connection (or is closing it: 421) before any of
            # the mail was sent: send it over a new one.
            smtp.close()
            smtp, mails = _connect(config), 0
            _envelope(smtp, sender, recipient)
        code, reply = smtp.data(payload)  # raises SMTPDataError only if DATA itself is refused
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
        accepted = f"{code} {reply.decode(errors='replace')}"
    except (smtplib.SMTPException, OSError) as exc:
        smtp.close()
        raise _classify(exc, config) from exc
    try:
        on_accepted(accepted)
    finally:
        _keep(config, smtp, mails + 1)  # the session is back to its start after a 250 to DATA
    return accepted


@dataclass
class _Open:
    """A connection kept for the next mail, with what decides whether it may carry one."""

    smtp: smtplib.SMTP
    pid: int
    mails: int
    idle_since: float


_OPEN: dict[SmtpConfig, _Open] = {}
"""This process's open connection per server (a job process sends one mail at a time)."""


def _connect(config: SmtpConfig) -> smtplib.SMTP:
    """Open a connection and say hello: STARTTLS and login as ``config`` asks."""
    context = ssl.create_default_context(cafile=config.ca_file)
    try:
        if config.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout, context=context)
        else:
            smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
    except (smtplib.SMTPException, OSError) as exc:
        raise _classify(exc, config) from exc
    try:
        if config.security == "starttls":
            smtp.starttls(context=context)
        if config.username:
            smtp.login(config.username, config.password or "")
        smtp.ehlo_or_helo_if_needed()
    except (smtplib.SMTPException, OSError) as exc:
        smtp.close()
        raise _classify(exc, config) from exc
    return smtp


def _envelope(smtp: smtplib.SMTP, sender: str, recipient: str) -> None:
    """MAIL FROM and RCPT TO, raising what smtplib raises for a refusal."""
    code, reply = smtp.mail(sender)
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, reply, sender)
    code, reply = smtp.rcpt(recipient)
    if code not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})


def _dropped(exc: BaseException) -> bool:
    """True if ``exc`` says the connection is gone or going (421), not that the mail was refused."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    return isinstance(exc, smtplib.SMTPServerDisconnected | OSError)


def _take(config: SmtpConfig) -> _Open | None:
    """This process's open connection to ``config``'s server if it can carry another mail, else None."""
    kept = _OPEN.pop(config, None)
    if kept is None:
        return None
    if kept.pid != os.getpid():  # inherited through fork: the parent's socket, not ours to use or close
        return None
    worn = kept.mails >= MAILS_PER_CONNECTION or time.monotonic() - kept.idle_since > REUSE_IDLE_SECONDS
    if worn or _closed_by_server(kept.smtp):
        _quit(kept.smtp)
        return None
    return kept


def _keep(config: SmtpConfig, smtp: smtplib.SMTP, mails: int) -> None:
    """Keep ``smtp``, which has carried ``mails`` mails, open for the next mail to ``config``'s server."""
    previous = _OPEN.pop(config, None)
    if previous is not None and previous.pid == os.getpid():  # another thread's; one is enough
        _quit(previous.smtp)
    _OPEN[config] = _Open(smtp, os.getpid(), mails, time.monotonic())


def _closed_by_server(smtp: smtplib.SMTP) -> bool:
    """True if the server closed the idle connection or said something unasked (a 421 before closing)."""
    sock = smtp.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _quit(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


@atexit.register
def _quit_all() -> None:
    """Say goodbye on the connections still open when the process exits normally."""
    while _OPEN:
        _, kept = _OPEN.popitem()
        if kept.pid == os.getpid():
            _quit(kept.smtp)


def _address(header: str) -> str:
    return parseaddr(header)[1]


def _reply_error(code: int, reply: bytes | str, what: str) -> Exception:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    message = f"{what}: {code} {text}".strip()
    if 400 <= code < 500:
        return TransientMailError(message)
    if 500 <= code < 600:
        return PermanentMailError(message)
    return TransientMailError(message)  # a reply outside 4xx/5xx: a confused server, try again later


def _classify(exc: BaseException, config: SmtpConfig) -> Exception:
    """Turn an smtplib/socket error into a transient or permanent mail error, without secrets."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()))
        return _reply_error(code, reply, "recipient refused")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return _reply_error(exc.smtp_code, exc.smtp_error, f"login to {config.display} refused")
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return _reply_error(exc.smtp_code, exc.smtp_error, "sender refused")
    if isinstance(exc, smtplib.SMTPDataError):
        return _reply_error(exc.smtp_code, exc.smtp_error, "message refused")
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply_error(exc.smtp_code, exc.smtp_error, f"{config.display} refused the session")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return PermanentMailError(f"{config.display}: {exc}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentMailError(f"the TLS certificate of {config.display} is not trusted: {exc.verify_message}")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return TransientMailError(f"{config.display} closed the connection")
    if isinstance(exc, TimeoutError):
        return TransientMailError(f"{config.display} did not answer within {config.timeout:g} s")
    if isinstance(exc, OSError):
        return TransientMailError(f"cannot reach {config.display}: {exc.strerror or type(exc).__name__}")
    return TransientMailError(f"SMTP error with {config.display}: {type(exc).__name__}")

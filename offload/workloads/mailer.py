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
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import parseaddr
from urllib.parse import unquote, urlsplit

from offload.retries import PermanentError

SCHEMES = {"smtp": ("plain", 25), "smtp+starttls": ("starttls", 587), "smtps": ("tls", 465)}
"""URL scheme → (security, default port)."""


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
    DATA), before QUIT: what happens to the connection afterwards cannot undo a delivery.
    """
    sender, recipient = _address(message["From"]), _address(message["To"])
    payload = message.as_bytes(policy=SMTP_POLICY)
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
        code, reply = smtp.mail(sender)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        code, reply = smtp.rcpt(recipient)
        if code not in (250, 251):
            raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
        code, reply = smtp.data(payload)  # raises SMTPDataError only if DATA itself is refused
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
        accepted = f"{code} {reply.decode(errors='replace')}"
    except (smtplib.SMTPException, OSError) as exc:
        smtp.close()
        raise _classify(exc, config) from exc
    on_accepted(accepted)
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()  # the mail is accepted; a QUIT that fails changes nothing
    return accepted


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

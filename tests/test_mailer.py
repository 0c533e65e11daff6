"""mailer.send against a real SMTP server (aiosmtpd): plain, STARTTLS and implicit TLS, and
how each refusal is sorted into retry-later or fail-now."""

from __future__ import annotations

import ssl
from email.message import EmailMessage

import pytest
import trustme

import dev
from offload.workloads.mailer import PermanentMailError, SmtpConfig, TransientMailError, send
from tests.conftest import wait_for
from tests.mailserver import MailServer, mail_server


def message(to: str = "reader@example.org") -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "Offload <news@example.org>"
    mail["To"] = to
    mail["Subject"] = "Hello"
    mail.set_content("Body text")
    return mail


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls(ca, tmp_path):
    """A server TLS context for 127.0.0.1 and the path of the CA file that trusts it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return context, str(ca_file)


def test_plain_smtp_delivers_and_reports_acceptance_before_quit():
    accepted = []
    with mail_server() as server:
        reply = send(SmtpConfig.from_url(f"smtp://127.0.0.1:{server.port}"), message(), accepted.append)

    assert reply.startswith("250 2.0.0 Ok: queued as M1")
    assert accepted == [reply]
    assert server.received() == {"reader@example.org": 1}
    assert server.messages[0][1]["Subject"] == "Hello"


def test_implicit_tls_with_a_trusted_certificate_delivers(tls):
    context, ca_file = tls
    with mail_server(ssl_context=context) as server:
        send(SmtpConfig.from_url(f"smtps://127.0.0.1:{server.port}", ca_file=ca_file), message(), lambda _: None)

    assert server.received() == {"reader@example.org": 1}


def test_implicit_tls_with_an_untrusted_certificate_fails_for_good(tls):
    context, _ = tls
    with mail_server(ssl_context=context) as server, pytest.raises(PermanentMailError, match="not trusted"):
        send(SmtpConfig.from_url(f"smtps://127.0.0.1:{server.port}"), message(), lambda _: None)

    assert server.received() == {}


def test_starttls_with_credentials_from_the_url_delivers(tls):
    context, ca_file = tls
    box = MailServer(credentials=("mailer", "p@ss:word"))
    with mail_server(box, tls_context=context, require_starttls=True) as server:
        url = f"smtp+starttls://mailer:p%40ss%3Aword@127.0.0.1:{server.port}"
        send(SmtpConfig.from_url(url, ca_file=ca_file), message(), lambda _: None)

    assert server.received() == {"reader@example.org": 1}


def test_a_refused_login_fails_for_good_and_never_shows_the_password(tls):
    context, ca_file = tls
    box = MailServer(credentials=("mailer", "right"))
    with mail_server(box, tls_context=context) as server:
        config = SmtpConfig.from_url(f"smtp+starttls://mailer:wrong-secret@127.0.0.1:{server.port}", ca_file=ca_file)
        with pytest.raises(PermanentMailError) as caught:
            send(config, message(), lambda _: None)

    assert "535" in str(caught.value)
    assert "wrong-secret" not in str(caught.value)
    assert "wrong-secret" not in repr(config) and "wrong-secret" not in config.display
    assert config.display == f"smtp+starttls://mailer@127.0.0.1:{server.port}"


def test_starttls_is_required_when_the_url_asks_for_it():
    with mail_server() as server, pytest.raises(PermanentMailError, match="STARTTLS"):
        send(SmtpConfig.from_url(f"smtp+starttls://127.0.0.1:{server.port}"), message(), lambda _: None)

    assert server.received() == {}


def test_a_4xx_reply_is_transient():
    with mail_server(MailServer(refuse_next=1)) as server, pytest.raises(TransientMailError, match="451"):
        send(SmtpConfig.from_url(f"smtp://127.0.0.1:{server.port}"), message(), lambda _: None)

    assert server.received() == {}


def test_a_dropped_connection_is_transient():
    with mail_server(MailServer(refuse_next=2)) as server, pytest.raises(TransientMailError, match="closed"):
        send(SmtpConfig.from_url(f"smtp://127.0.0.1:{server.port}"), message(), lambda _: None)

    assert server.dropped == 1


def test_nothing_listening_is_transient():
    with pytest.raises(TransientMailError, match="cannot reach"):
        send(SmtpConfig.from_url(f"smtp://127.0.0.1:{dev.free_port()}", timeout=2), message(), lambda _: None)


def test_a_5xx_for_the_recipient_is_permanent():
    box = MailServer(permanent={"gone@example.org": "550 5.1.1 No such mailbox"})
    with mail_server(box) as server, pytest.raises(PermanentMailError, match=r"550 5\.1\.1 No such mailbox"):
        send(SmtpConfig.from_url(f"smtp://127.0.0.1:{server.port}"), message("gone@example.org"), lambda _: None)


def test_a_connection_dropped_after_acceptance_still_counts_as_delivered():
    accepted = []
    with mail_server(MailServer(drop_after_accept=True)) as server:
        config = SmtpConfig.from_url(f"smtp://127.0.0.1:{server.port}")
        for _ in range(3):  # each drop lands before, during or after QUIT
            send(config, message(), accepted.append)

    assert len(accepted) == 3
    assert server.received() == {"reader@example.org": 3}


def test_mails_sent_one_after_another_share_one_connection():
    with mail_server() as server:
        config = SmtpConfig.from_url(f"smtp://127.0.0.1:{server.port}")
        for number in range(5):
            send(config, message(f"reader{number}@example.org"), lambda _: None)

        assert len(server.received()) == 5
        assert server.connections() == 1


def test_mails_over_tls_with_a_login_share_one_connection(tls):
    context, ca_file = tls
    with mail_server(MailServer(credentials=("news", "s3cret")), tls_context=context, require_starttls=True) as server:
        config = SmtpConfig.from_url(f"smtp+starttls://news:s3cret@127.0.0.1:{server.port}", ca_file=ca_file)
        for number in range(3):
            send(config, message(f"reader{number}@example.org"), lambda _: None)

        assert len(server.received()) == 3
        assert server.connections() == 1


def test_a_connection_the_server_closed_while_idle_is_replaced():
    with mail_server(MailServer(drop_after_accept=True)) as server:
        config = SmtpConfig.from_url(f"smtp://127.0.0.1:{server.port}")
        for number in range(3):
            send(config, message(f"reader{number}@example.org"), lambda _: None)
            wait_for(lambda n=number: server.closed_after_accept == n + 1, what="the server to close the connection")

        assert len(server.received()) == 3
        assert server.connections() == 3


def test_a_reused_connection_dropped_at_mail_sends_the_mail_over_a_new_one():
    with mail_server(MailServer(drop_reused=1)) as server:
        config = SmtpConfig.from_url(f"smtp://127.0.0.1:{server.port}")
        for number in range(3):
            send(config, message(f"reader{number}@example.org"), lambda _: None)

        assert len(server.received()) == 3  # each once
        assert server.connections() == 2


@pytest.mark.parametrize(
    ("url", "problem"),
    [("http://mail.example.org", "must start with"), ("smtp://", "no host"), ("smtps://h:port", "malformed port")],
)
def test_a_malformed_smtp_url_is_refused_with_a_reason(url, problem):
    with pytest.raises(ValueError, match=problem):
        SmtpConfig.from_url(url)

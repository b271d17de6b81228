"""Transports against real parts: the aiosmtpd sink, a temporary folder, a text stream."""

from __future__ import annotations

import io
import logging
import re
import shutil
import ssl
import subprocess
import time
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
from smtp_sink import SmtpSink

from nurture.delivery import transports
from nurture.delivery.message import OutgoingEmail, build_message_bytes, message_id_for
from nurture.delivery.smtp import SMTPEndpoint, SMTPTransport
from nurture.delivery.transports import (
    ConsoleTransport,
    FileTransport,
    SendResult,
    Transport,
    register_transport,
    transport_from_url,
)
from nurture.errors import ConfigError

NOW = datetime(2026, 3, 9, 9, 0, tzinfo=timezone.utc)


def outgoing(index: int, **changes: object) -> tuple[OutgoingEmail, bytes]:
    fields: dict[str, object] = {
        "message_id": message_id_for(f"enrollment-{index}:welcome", "acme.test"),
        "from_addr": "Acme Team <news@acme.test>",
        "to_addr": f"Lead {index} <lead{index}@example.org>",
        "subject": f"Welcome, lead {index}",
        "html": f"<p>Hello <b>lead {index}</b></p>",
        "text": f"Hello lead {index}\n.a line starting with a dot\n.\nFrom the team\n",
    }
    fields.update(changes)
    email = OutgoingEmail(**fields)  # type: ignore[arg-type]
    return email, build_message_bytes(email, date=NOW)


def batch_of(count: int, start: int = 0) -> list[tuple[OutgoingEmail, bytes]]:
    return [outgoing(index) for index in range(start, start + count)]


@pytest.fixture
def smtp(smtp_sink: SmtpSink):
    with SMTPTransport.from_url(smtp_sink.url + "?connections=4&timeout=5") as transport:
        yield transport


# SMTP


def test_a_batch_over_several_connections_arrives_complete_and_intact(smtp_sink: SmtpSink, smtp: SMTPTransport) -> None:
    batch = batch_of(200)

    results = smtp.send_many(batch)

    assert [result.ok for result in results] == [True] * 200
    received = smtp_sink.wait_for(200)
    assert len(received) == 200
    assert len({message.peer for message in received}) > 1, "expected the batch to be shared among connections"
    by_id = {message.parsed()["Message-ID"]: message for message in received}
    for (email, data), result in zip(batch, results, strict=True):
        message = by_id[email.message_id]
        assert message.data == data  # dot-stuffing and line endings survive the trip
        assert message.mail_from == "news@acme.test"
        assert message.rcpt_tos == (email.to_addr.rpartition("<")[2].rstrip(">"),)
        assert result.provider_message_id == message.queue_id
        parsed = message.parsed()
        assert parsed["Subject"] == email.subject
        assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == email.text


def test_connections_persist_between_batches(smtp_sink: SmtpSink) -> None:
    with SMTPTransport.from_url(smtp_sink.url + "?connections=1") as transport:
        transport.send_many(batch_of(3))
        transport.send_many(batch_of(3, start=3))

    received = smtp_sink.wait_for(6)
    assert len({message.peer for message in received}) == 1


def test_a_4xx_for_one_recipient_is_a_temporary_failure_for_that_message_only(
    smtp_sink: SmtpSink, smtp: SMTPTransport
) -> None:
    smtp_sink.fail_next("RCPT", 450, recipient="lead3@example.org")

    results = smtp.send_many(batch_of(8))

    assert [result.ok for result in results] == [True, True, True, False, True, True, True, True]
    assert results[3].permanent is False
    assert results[3].error is not None and results[3].error.startswith("450")
    assert len(smtp_sink.wait_for(7)) == 7


@pytest.mark.parametrize(
    ("stage", "code", "permanent"),
    [
        ("RCPT", 550, True),
        ("RCPT", 451, False),
        ("RCPT", 552, False),  # RFC 5321 4.5.3.1.10: mailbox full is temporary
        ("DATA", 554, True),
        ("DATA", 452, False),
    ],
)
def test_refusals_are_permanent_for_5xx_and_temporary_for_4xx(
    smtp_sink: SmtpSink, stage: str, code: int, permanent: bool
) -> None:
    smtp_sink.fail_next(stage, code, recipient="lead1@example.org")  # type: ignore[arg-type]
    # One connection: the refused transaction must be reset so that the next message goes through on it.
    with SMTPTransport.from_url(smtp_sink.url + "?connections=1") as transport:
        results = transport.send_many(batch_of(3))

    assert [result.ok for result in results] == [True, False, True]
    assert results[1].permanent is permanent
    assert results[1].error is not None and results[1].error.startswith(str(code))
    assert [message.rcpt_tos for message in smtp_sink.wait_for(2)] == [("lead0@example.org",), ("lead2@example.org",)]
    assert len({message.peer for message in smtp_sink.messages}) == 1


def test_a_421_closes_the_session_and_the_next_message_reconnects(smtp_sink: SmtpSink) -> None:
    smtp_sink.fail_next("RCPT", 421, recipient="lead0@example.org")
    with SMTPTransport.from_url(smtp_sink.url + "?connections=1") as transport:
        results = transport.send_many(batch_of(3))

    assert [(result.ok, result.permanent) for result in results] == [(False, False), (True, False), (True, False)]
    assert len(smtp_sink.wait_for(2)) == 2


def test_an_invalid_address_fails_that_message_permanently(smtp_sink: SmtpSink, smtp: SMTPTransport) -> None:
    email, data = outgoing(1)
    broken = OutgoingEmail(**{**_fields(email), "to_addr": "not an address"})

    results = smtp.send_many([outgoing(0), (broken, data), outgoing(2)])

    assert [(result.ok, result.permanent) for result in results] == [(True, False), (False, True), (True, False)]


def test_the_server_going_away_mid_batch_gives_temporary_failures_then_recovers(smtp_sink: SmtpSink) -> None:
    batch = batch_of(60)
    smtp_sink.go_away_after(10)

    with SMTPTransport.from_url(smtp_sink.url + "?connections=3&timeout=5") as transport:
        results = transport.send_many(batch)

        assert len(results) == 60
        failed = [index for index, result in enumerate(results) if not result.ok]
        assert failed, "the sink went away after 10 messages, so some sends must fail"
        assert all(not results[index].permanent for index in failed)
        received_ids = {message.parsed()["Message-ID"] for message in smtp_sink.messages}
        # Whatever was reported sent really arrived (a message can arrive without its 250 getting back).
        assert {email.message_id for (email, _), result in zip(batch, results) if result.ok} <= received_ids

        smtp_sink.wait_until_stopped()
        smtp_sink.start()
        retried = transport.send_many([batch[index] for index in failed])

    assert all(result.ok for result in retried)
    received_ids = {message.parsed()["Message-ID"] for message in smtp_sink.messages}
    assert received_ids == {email.message_id for email, _ in batch}


def test_an_unreachable_server_fails_the_batch_quickly_and_temporarily(smtp_sink: SmtpSink) -> None:
    smtp_sink.stop()
    with SMTPTransport.from_url(smtp_sink.url + "?connections=4&timeout=5") as transport:
        started = time.monotonic()
        results = transport.send_many(batch_of(50))
        elapsed = time.monotonic() - started

    assert [(result.ok, result.permanent) for result in results] == [(False, False)] * 50
    assert elapsed < 3


def test_failures_are_logged_with_counts_and_codes_but_no_addresses(
    smtp_sink: SmtpSink, smtp: SMTPTransport, caplog: pytest.LogCaptureFixture
) -> None:
    smtp_sink.fail_next("RCPT", 550, recipient="lead1@example.org")
    smtp_sink.fail_next("DATA", 451, recipient="lead2@example.org")

    with caplog.at_level(logging.DEBUG, logger="nurture"):
        smtp.send_many(batch_of(4))

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "550" in logged and "451" in logged
    assert "@" not in logged
    assert "Hello lead" not in logged


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_authentication_with_url_encoded_credentials() -> None:
    with SmtpSink(auth=("mailer@acme.test", "p@ss:w/rd")) as sink:
        url = f"smtp://mailer%40acme.test:p%40ss%3Aw%2Frd@{sink.host}:{sink.port}"
        with SMTPTransport.from_url(url) as transport:
            results = transport.send_many(batch_of(2))
        with SMTPTransport.from_url(f"smtp://mailer%40acme.test:wrong@{sink.host}:{sink.port}") as transport:
            refused = transport.send_many(batch_of(2))

        assert all(result.ok for result in results)
        assert len(sink.wait_for(2)) == 2
        assert [(result.ok, result.permanent) for result in refused] == [(False, False)] * 2


def test_an_empty_batch_sends_nothing(smtp: SMTPTransport) -> None:
    assert smtp.send_many([]) == []


def test_close_is_idempotent(smtp_sink: SmtpSink) -> None:
    transport = SMTPTransport.from_url(smtp_sink.url)
    transport.send_many(batch_of(5))
    transport.close()
    transport.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throw-away self-signed certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _contexts(certificate: tuple[Path, Path]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = certificate
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


def test_starttls_then_authentication(certificate: tuple[Path, Path]) -> None:
    server, client = _contexts(certificate)
    with SmtpSink(tls=server, auth=("mailer", "secret")) as sink:
        with SMTPTransport(SMTPEndpoint.from_url(sink.url + "?starttls=1"), ssl_context=client) as transport:
            results = transport.send_many(batch_of(3))
        with SMTPTransport(SMTPEndpoint.from_url(sink.url), ssl_context=client) as plain:
            refused = plain.send_many(batch_of(2))

        assert all(result.ok for result in results)
        assert len(sink.wait_for(3)) == 3
        # Without STARTTLS the server refuses AUTH: a configuration problem, so the messages stay retryable.
        assert [(result.ok, result.permanent) for result in refused] == [(False, False)] * 2


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls(certificate: tuple[Path, Path]) -> None:
    server, client = _contexts(certificate)
    with SmtpSink(tls=server, implicit_tls=True, auth=("mailer", "secret")) as sink:
        assert sink.url.startswith("smtps://")
        with SMTPTransport(SMTPEndpoint.from_url(sink.url), ssl_context=client) as transport:
            results = transport.send_many(batch_of(3))
        with SMTPTransport(SMTPEndpoint.from_url(sink.url)) as untrusting:
            refused = untrusting.send_many(batch_of(1))

        assert all(result.ok for result in results)
        assert len(sink.wait_for(3)) == 3
        assert [(result.ok, result.permanent) for result in refused] == [(False, False)]


def test_a_server_requiring_starttls_refuses_plain_mail_temporarily(certificate: tuple[Path, Path]) -> None:
    server, _ = _contexts(certificate)
    with SmtpSink(tls=server) as sink, SMTPTransport.from_url(sink.url) as transport:
        results = transport.send_many(batch_of(2))

    assert [(result.ok, result.permanent) for result in results] == [(False, False)] * 2
    assert all(result.error is not None and result.error.startswith("530") for result in results)


# File and console


def test_file_transport_writes_one_parseable_file_per_message(tmp_path: Path) -> None:
    transport = FileTransport(tmp_path / "outbox")
    batch = batch_of(3)

    results = transport.send_many(batch)

    files = sorted((tmp_path / "outbox").iterdir())
    assert len(files) == 3
    assert all(result.ok for result in results)
    for (email, data), result in zip(batch, results, strict=True):
        path = tmp_path / "outbox" / str(result.provider_message_id)
        assert path.suffix == ".eml"
        assert path.read_bytes() == data
        assert parse(path.read_bytes())["Message-ID"] == email.message_id


def test_file_transport_overwrites_a_resend_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    transport = FileTransport(tmp_path)
    transport.send_many(batch_of(2))
    transport.send_many(batch_of(2))

    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        email.message_id.strip("<>") + ".eml" for email, _ in batch_of(2)
    )


def test_file_transport_reports_an_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    results = FileTransport(blocker / "outbox").send_many(batch_of(2))

    assert [(result.ok, result.permanent) for result in results] == [(False, False)] * 2


def test_console_transport_prints_a_readable_block_without_html_or_mime() -> None:
    stream = io.StringIO()
    email, data = outgoing(7, subject="Grüße from Acme", html="<p>Hidden <b>markup</b></p>")

    results = ConsoleTransport(stream).send_many([(email, data)])

    output = stream.getvalue()
    assert results == [SendResult(ok=True, provider_message_id=email.message_id)]
    assert "Grüße from Acme" in output
    assert "Hello lead 7" in output
    assert email.to_addr in output
    assert email.message_id in output
    assert "<p>" not in output and "<b>" not in output
    assert "Content-Transfer-Encoding" not in output


# transport_from_url


def _endpoint(url: str) -> SMTPEndpoint:
    transport = transport_from_url(url)
    assert isinstance(transport, SMTPTransport)
    return transport.endpoint


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.acme.test", SMTPEndpoint("mail.acme.test")),
        ("smtp://127.0.0.1:2525", SMTPEndpoint("127.0.0.1", 2525)),
        ("SMTP://mail.acme.test:587?starttls=1", SMTPEndpoint("mail.acme.test", 587, starttls=True)),
        (
            "smtp://mail.acme.test?starttls=0&timeout=2.5&connections=8",
            SMTPEndpoint("mail.acme.test", timeout=2.5, connections=8),
        ),
        (
            "smtp://user%40acme.test:p%40ss%3Aw%2Frd@mail.acme.test:587?starttls=true",
            SMTPEndpoint("mail.acme.test", 587, starttls=True, username="user@acme.test", password="p@ss:w/rd"),
        ),
        ("smtp://apikey:@mail.acme.test", SMTPEndpoint("mail.acme.test", username="apikey", password="")),
        ("smtps://mail.acme.test", SMTPEndpoint("mail.acme.test", 465, implicit_tls=True)),
        (
            "smtps://u:p@mail.acme.test:2465/",
            SMTPEndpoint("mail.acme.test", 2465, implicit_tls=True, username="u", password="p"),
        ),
        ("smtp://[::1]:2525", SMTPEndpoint("::1", 2525)),
        ("smtp://mail.acme.test?connections=1000", SMTPEndpoint("mail.acme.test", connections=64)),
    ],
)
def test_smtp_urls(url: str, expected: SMTPEndpoint) -> None:
    endpoint = _endpoint(url)

    assert endpoint == expected
    assert endpoint.password == expected.password


def test_file_urls_relative_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = transport_from_url("file://outbox/nurture")
    absolute = transport_from_url(f"file://{tmp_path}/abs%20dir")

    assert isinstance(relative, FileTransport) and relative.directory == Path("outbox/nurture")
    assert isinstance(absolute, FileTransport) and absolute.directory == tmp_path / "abs dir"
    relative.send_many(batch_of(1))
    absolute.send_many(batch_of(1))
    assert len(list((tmp_path / "outbox" / "nurture").glob("*.eml"))) == 1
    assert len(list((tmp_path / "abs dir").glob("*.eml"))) == 1


def test_console_url() -> None:
    assert isinstance(transport_from_url("console://"), ConsoleTransport)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://api.example.com/send", "unsupported mail URL scheme 'http'"),
        ("", "unsupported mail URL scheme ''"),
        ("mail.acme.test:25", "unsupported mail URL scheme"),
        ("smtp://", "needs a host"),
        ("smtp://:secret@:25", "needs a host"),
        ("smtp://mail.acme.test:port", "invalid port"),
        ("smtp://mail.acme.test:99999", "invalid port"),
        ("smtp://mail.acme.test/path", "takes no path"),
        ("smtp://mail.acme.test?tls=1", "unknown smtp:// mail URL option(s) tls"),
        ("smtp://mail.acme.test?starttls=maybe", "starttls must be 1 or 0"),
        ("smtp://mail.acme.test?timeout=0", "timeout must be a positive float"),
        ("smtp://mail.acme.test?timeout=soon", "timeout must be a positive float"),
        ("smtp://mail.acme.test?connections=0", "connections must be a positive int"),
        ("smtp://mail.acme.test?connections=2.5", "connections must be a positive int"),
        ("smtps://mail.acme.test?starttls=1", "already encrypted"),
        ("file://", "needs a directory"),
        ("console://somewhere", "takes no host"),
    ],
)
def test_bad_urls_raise_config_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        transport_from_url(url)


def test_unsupported_scheme_lists_the_supported_ones_without_leaking_the_url() -> None:
    with pytest.raises(ConfigError) as raised:
        transport_from_url("https://user:topsecret@api.example.com")

    assert "console://, file://, smtp://, smtps://" in str(raised.value)
    assert "topsecret" not in str(raised.value)


def test_config_errors_do_not_leak_the_password() -> None:
    with pytest.raises(ConfigError) as raised:
        transport_from_url("smtp://user:topsecret@mail.acme.test?bogus=1")

    assert "topsecret" not in str(raised.value)
    assert "topsecret" not in repr(SMTPEndpoint.from_url("smtp://user:topsecret@mail.acme.test"))


def test_another_scheme_can_be_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    class ApiTransport:
        def __init__(self, url: str) -> None:
            self.url = url

        def send_many(self, batch: list[tuple[OutgoingEmail, bytes]]) -> list[SendResult]:
            return [SendResult(ok=True, provider_message_id=email.message_id) for email, _ in batch]

        def close(self) -> None:
            pass

    monkeypatch.setattr(transports, "_FACTORIES", dict(transports._FACTORIES))
    register_transport("acmeapi", ApiTransport)

    transport: Transport = transport_from_url("acmeapi://key@api.acme.test")
    assert isinstance(transport, ApiTransport)
    assert "acmeapi" in transports.supported_schemes()


# helpers


def _fields(email: OutgoingEmail) -> dict[str, object]:
    return {name: getattr(email, name) for name in OutgoingEmail.__slots__}


def parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def test_the_plain_address_path_says_what_smtplib_quoteaddr_would() -> None:
    import random
    import smtplib

    from nurture.delivery.message import PLAIN_ADDRESS as _PLAIN_ADDRESS

    atom = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
    rng = random.Random(7)
    checked = 0
    for _ in range(5000):
        local = ".".join("".join(rng.choice(atom) for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 3)))
        domain = ".".join("".join(rng.choice("abz09-") for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 3)))
        address = f"{local}@{domain}"
        assert _PLAIN_ADDRESS.fullmatch(address)
        assert smtplib.quoteaddr(address) == f"<{address}>", address
        checked += 1
    for odd in ("a(comment)@x.test", '"a b"@x.test', "a..b@x.test", ".a@x.test", "a@x..test", "a@[127.0.0.1]",
                "Name <a@x.test>", "a@x.test,b@y.test"):
        assert not _PLAIN_ADDRESS.fullmatch(odd), odd  # these go through smtplib's own quoting
    assert checked == 5000


def test_envelope_options_still_reach_the_server(smtp_sink: SmtpSink) -> None:
    with SMTPTransport.from_url(smtp_sink.url + "?connections=1") as transport:
        [result] = transport.send_many(batch_of(1))
        session = transport._connections[0]._smtp
        assert result.ok and session is not None and session.has_extn("size")
        # smtplib adds SIZE=n when the server offers it: MAIL FROM must carry it after the plain address
        code, _reply = session.mail("news@acme.test", ["SIZE=1000"])
        assert code == 250
        session.rset()
        code, reply = session.mail("news@acme.test", ["SIZE=999999999999"])
        assert code == 552, reply  # the sink enforces its size limit: the option was sent
        session.rset()
    assert smtp_sink.wait_for(1)[0].mail_from == "news@acme.test"


def test_plain_addresses_parse_as_parseaddr_parses_them() -> None:
    import random
    from email.utils import parseaddr

    from nurture.delivery.message import PLAIN_ADDRESS, envelope_address

    atom = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
    rng = random.Random(11)
    for _ in range(5000):
        local = ".".join("".join(rng.choice(atom) for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 3)))
        domain = ".".join("".join(rng.choice("abz09-") for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 3)))
        address = f"{local}@{domain}"
        assert PLAIN_ADDRESS.fullmatch(address)
        assert parseaddr(address) == ("", address), address
        assert envelope_address(f"  {address} ") == address

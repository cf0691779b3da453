from __future__ import annotations

import datetime
import io
import ipaddress
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ddmail_common.logredact import RedactingFilter, install, pump, redact

# --- IP addresses ---------------------------------------------------------------------------


def ipv6_spellings(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[str]:
    assert isinstance(addr, ipaddress.IPv6Address)
    spellings = [addr.compressed, addr.exploded, addr.compressed.upper()]
    if addr.ipv4_mapped is not None:
        spellings.append(f"::ffff:{addr.ipv4_mapped}")
    return spellings


ip_texts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(ipv6_spellings).flatmap(st.sampled_from),
    st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
    st.ip_addresses(v=6).map(lambda a: f"{a}%eth0"),
)
settings_around_ip = st.sampled_from(
    ["{}", "[{}]", "[IPv6:{}]", "rip={},", "unknown[{}]", "host[{}]:25", "<{}>", "({}:25)"]
)


@given(st.text(), ip_texts, settings_around_ip, st.text())
def test_no_ip_address_survives_in_any_surrounding_text(
    before: str, ip: str, setting: str, after: str
) -> None:
    assert ip not in redact(before + setting.format(ip) + after)


@given(st.ip_addresses(v=4), st.ip_addresses(v=6))
def test_ip_addresses_are_replaced_whole(
    v4: ipaddress.IPv4Address, v6: ipaddress.IPv6Address
) -> None:
    assert redact(f"from {v4} and {v6} done") == "from [ip] and [ip] done"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "Jan  2 12:34:56 mx postfix/smtpd[4242]: connect from unknown[127.0.0.1]",
            "Jan  2 12:34:56 mx postfix/smtpd[4242]: connect from unknown[ip]",
        ),
        (
            "Jan  2 12:34:56 mx dovecot: imap-login: Login: user=<a@b>, method=PLAIN, "
            "rip=192.0.2.7, lip=127.0.0.1, mpid=5, TLS, session=<AbCdEf12>",
            "Jan  2 12:34:56 mx dovecot: imap-login: Login: user=<a@b>, method=PLAIN, "
            "rip=[ip], lip=[ip], mpid=5, TLS, session=<AbCdEf12>",
        ),
        (
            "postfix/smtpd[1]: 4F3A2B1C9D: client=localhost[::1]",
            "postfix/smtpd[1]: 4F3A2B1C9D: client=[host][ip]",
        ),
        (
            "postfix/smtp[9]: 4F3A2B1C9D: to=<x@example.org>, relay=mx.example.org"
            "[2001:db8::25]:25, delay=0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
            "postfix/smtp[9]: 4F3A2B1C9D: to=<x@example.org>, relay=mx.example.org"
            "[ip]:25, delay=0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
        ),
        (
            "NOQUEUE: reject: RCPT from unknown[192.0.2.7]: 554 5.7.1 <x@y.example>: Relay "
            "access denied; from=<a@b.example> to=<x@y.example> proto=ESMTP helo=<[192.0.2.7]>",
            "NOQUEUE: reject: RCPT from unknown[ip]: 554 5.7.1 <x@y.example>: Relay "
            "access denied; from=<a@b.example> to=<x@y.example> proto=ESMTP helo=<[host]>",
        ),
        (
            "warning: hostname x.example does not resolve to address 2001:db8::1: "
            "Name or service not known",
            "warning: hostname [host] does not resolve to address [ip]: Name or service not known",
        ),
        (
            "pop3-login: Aborted login (no auth attempts in 0 secs): user=<>, "
            "rip=fe80::1%eth0, lip=::ffff:192.0.2.1, TLS handshaking",
            "pop3-login: Aborted login (no auth attempts in 0 secs): user=<>, "
            "rip=[ip], lip=[ip], TLS handshaking",
        ),
        ("helo=<[IPv6:2001:db8::1]>", "helo=<[host]>"),
        ("tcp 192.0.2.7.25 > 198.51.100.1.51234", "tcp [ip].25 > [ip].51234"),
        ("2001:0DB8:0000:0000:0000:FF00:0042:8329", "[ip]"),
        ("::", "[ip]"),
    ],
)
def test_postfix_and_dovecot_lines_lose_their_ip_addresses(line: str, expected: str) -> None:
    assert redact(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "Dec  2 21:07:07 mail postfix/smtpd[4242]: connect from "
            "pool-71-105-12-34.example.net[71.105.12.34]",
            "Dec  2 21:07:07 mail postfix/smtpd[4242]: connect from [host][ip]",
        ),
        (
            "postfix/smtpd[4242]: disconnect from pool-71-105-12-34.example.net[71.105.12.34] "
            "ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4",
            "postfix/smtpd[4242]: disconnect from [host][ip] ehlo=1 mail=1 rcpt=0/1 quit=1 "
            "commands=3/4",
        ),
        (
            "postfix/cleanup[77]: 4F3A2B1C9D: client=dsl-12-34.home.example[2001:db8::7]",
            "postfix/cleanup[77]: 4F3A2B1C9D: client=[host][ip]",
        ),
        (
            "NOQUEUE: reject: RCPT from pool-71-105-12-34.example.net[71.105.12.34]: 550 5.1.1 "
            "<x@ddmail.test>: Recipient address rejected: User unknown; from=<a@b.example> "
            "to=<x@ddmail.test> proto=ESMTP helo=<alices-laptop.fritz.box>",
            "NOQUEUE: reject: RCPT from [host][ip]: 550 5.1.1 <x@ddmail.test>: Recipient "
            "address rejected: User unknown; from=<a@b.example> to=<x@ddmail.test> "
            "proto=ESMTP helo=<[host]>",
        ),
        (
            "postfix/smtpd[1]: lost connection after EHLO from host-34.isp.example[192.0.2.34]",
            "postfix/smtpd[1]: lost connection after EHLO from [host][ip]",
        ),
        (
            "warning: 192.0.2.34: hostname host-34.isp.example verification failed: "
            "Name or service not known",
            "warning: [ip]: hostname [host] verification failed: Name or service not known",
        ),
        ("EHLO/HELO: ehlo=<Alices-MacBook-Pro.local>", "EHLO/HELO: ehlo=<[host]>"),
    ],
)
def test_client_host_and_helo_names_are_redacted(line: str, expected: str) -> None:
    assert redact(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # Found by the outside review: a client's Message-ID or envelope sender spelled its
        # address in a reverse-DNS name, and the log kept it.
        (
            "postfix/cleanup[5]: 4F3A: message-id=<a@pool-71-105-12-34.example.net>",
            "postfix/cleanup[5]: 4F3A: message-id=<a@[host]>",
        ),
        (
            "postfix/qmgr[6]: 4F3A: from=<x@h-198-51-100-88.dyn.example>, size=300",
            "postfix/qmgr[6]: 4F3A: from=<x@[host]>, size=300",
        ),
        (
            "lmtp(a@ddmail.test): msgid=<1@ip_10_0_0_1.internal>: saved",
            "lmtp(a@ddmail.test): msgid=<1@[host]>: saved",
        ),
        ("relay=71-105-12-34.isp.example[[ip]]:25", "relay=[host][[ip]]:25"),
    ],
)
def test_names_that_spell_an_ip_address_are_redacted(line: str, expected: str) -> None:
    assert redact(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        # Nothing to redact: no name, or a server we connected to, or a unix socket.
        "postfix/smtpd[1]: connect from unknown[192.0.2.7]",
        "postfix/smtp[9]: 4F3A: to=<x@example.org>, relay=mx.example.org[192.0.2.25]:25, "
        "delay=0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
        "postfix/lmtp[9]: 4F3A: to=<a@ddmail.test>, relay=mail.ddmail.test[/run/x.sock], "
        "status=sent (250 2.0.0 Stored)",
    ],
)
def test_names_that_identify_no_client_are_kept(line: str) -> None:
    redacted = redact(line)
    assert "[host]" not in redacted
    assert ("mx.example.org" in line) == ("mx.example.org" in redacted)


@pytest.mark.parametrize(
    "text",
    [
        "Jan  2 12:34:56 mx postfix/qmgr[77]: 4F3A2B1C9D: removed",
        "2024-01-02T12:34:56.123456+00:00 started",
        "status=sent (250 2.0.0 Ok: queued as 4F3A2B1C9D) dsn=5.7.1 delay=0.12",
        "message-id=<20240102123456.4F3A2B1C9D@mx.example.org>",
        "message-id=<CAJ8uoz2Gjx0b9RMXQvYpWk0oNvYZ0JcV3yVEc4FhKk5i0WmAhw@mail.gmail.com>",
        "imap(a@b.example)<4242><AbCdEfGh1234>: Disconnected: Logged out in=123 out=4567",
        "MAC 00:11:22:33:44:55 and pi is 3.14159",
        "/usr/lib/x86_64-linux-gnu/dovecot/modules/lib20_fts_plugin_and_more.so",
    ],
)
def test_ordinary_log_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


# Without "b" no "bearer <word>" can arise, which is rightly masked.
prose_words = st.text(alphabet="acdefghijklmnopqrstuvwxyzACXYZ.,;!?()'", min_size=1, max_size=12)


@given(st.lists(prose_words, max_size=30))
def test_plain_prose_is_left_alone(words: list[str]) -> None:
    text = " ".join(words)
    assert redact(text) == text


@given(st.times())
def test_timestamps_are_left_alone(t: datetime.time) -> None:
    text = f"at {t} the queue ran"
    assert redact(text) == text


def test_dotted_version_numbers_are_redacted_as_a_precaution() -> None:
    # Indistinguishable from an IPv4 address; leaking an address would be worse.
    assert redact("Dovecot v2.3.19.1 (9b53102964) starting up") == (
        "Dovecot v[ip] (9b53102964) starting up"
    )


# --- secrets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("login password=hunter2 ok", "login password=[redacted] ok"),
        ("PASSWORD=Hunter2", "PASSWORD=[redacted]"),
        ("pass=abc, method=PLAIN", "pass=[redacted] method=PLAIN"),
        ('secret="two words" next', "secret=[redacted] next"),
        ("token='x y z' next", "token=[redacted] next"),
        ("key=abc", "key=[redacted]"),
        ("private_key=abc", "private_key=[redacted]"),
        ("api_key=abc access_token=def", "api_key=[redacted] access_token=[redacted]"),
        ("GET /unlock?token=abc&x=1 HTTP/1.1", "GET /unlock?token=[redacted] HTTP/1.1"),
        ("Authorization: Bearer abc.def.ghi", "Authorization: [redacted]"),
        ("authorization: Basic dXNlcjpwYXNz", "authorization: [redacted]"),
        ("{'Authorization': 'Bearer abc', 'Host': 'h'}", "{'Authorization': [redacted]"),
        ("sent Bearer eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl then", "sent Bearer [redacted] then"),
        ("sha1 " + "0123456789abcdef" * 3 + " end", "sha1 [redacted] end"),
        (
            "k " + "dGhpcyBpcyBhIHZlcnkgbG9uZyBzZWNyZXQga2V5IG1hdGVyaWFs==" + " end",
            "k [redacted] end",
        ),
        ("urlsafe " + "Zm9vYmFy_-Zm9vYmFy_-Zm9vYmFy_-Zm9vYmFy_-AB", "urlsafe [redacted]"),
    ],
)
def test_secrets_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_multi_line_text_keeps_lines_after_an_authorization_header() -> None:
    assert redact("Authorization: Bearer x\nHost: h") == "Authorization: [redacted]\nHost: h"


def test_pem_key_body_is_masked() -> None:
    body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"
    assert redact(f"-----BEGIN PRIVATE KEY-----\n{body}\n") == (
        "-----BEGIN PRIVATE KEY-----\n[redacted]\n"
    )


# --- logging --------------------------------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test_logredact")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    install()
    yield logger, stream
    logger.removeHandler(handler)


def test_filter_redacts_the_formatted_message_and_drops_args() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "from %s as %s", ("192.0.2.7", "a"), None
    )
    assert RedactingFilter().filter(record)
    assert record.msg == "from [ip] as a"
    assert record.args is None
    assert record.getMessage() == "from [ip] as a"


def test_installed_filter_redacts_log_output(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("client %s password=%s", "2001:db8::7", "hunter2")
    assert stream.getvalue() == "client [ip] password=[redacted]\n"


def test_records_from_child_loggers_are_redacted(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    _, stream = captured
    logging.getLogger("test_logredact.child").warning("peer %s", "192.0.2.7")
    assert stream.getvalue() == "peer [ip]\n"


def test_tracebacks_are_redacted(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    try:
        raise ConnectionRefusedError("connect to 192.0.2.7 port 25 failed")
    except ConnectionRefusedError:
        logger.exception("delivery failed")
    output = stream.getvalue()
    assert "192.0.2.7" not in output
    assert "ConnectionRefusedError: connect to [ip] port 25 failed" in output


def test_a_broken_format_call_is_logged_redacted_instead_of_raising(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("from %s and %d", "192.0.2.7", "not a number")
    assert "192.0.2.7" not in stream.getvalue()


def test_installing_twice_keeps_one_redaction() -> None:
    install()
    factory = logging.getLogRecordFactory()
    install()
    assert logging.getLogRecordFactory() is factory


def test_loggers_configured_after_install_are_redacted() -> None:
    install()
    stream = io.StringIO()
    late = logging.getLogger("test_logredact.late")
    late.addHandler(logging.StreamHandler(stream))
    late.propagate = False
    late.warning("peer %s", "192.0.2.7")
    assert stream.getvalue() == "peer [ip]\n"


# --- pump -----------------------------------------------------------------------------------


@pytest.fixture
def strict_umask() -> Iterator[None]:
    old = os.umask(0o077)
    yield
    os.umask(old)


def test_pump_writes_redacted_lines_to_a_new_file_with_mode_0640(
    tmp_path: Path, strict_umask: None
) -> None:
    dst = tmp_path / "postfix.log"
    src = io.BytesIO(b"connect from unknown[192.0.2.7]\r\nbad \xff byte\nno newline at end")
    pump(src, dst)
    assert dst.read_text(encoding="utf-8") == (
        "connect from unknown[ip]\nbad \ufffd byte\nno newline at end\n"
    )
    assert stat.S_IMODE(dst.stat().st_mode) == 0o640


def test_pump_appends_to_an_existing_file_and_keeps_its_mode(tmp_path: Path) -> None:
    dst = tmp_path / "dovecot.log"
    dst.write_text("old line\n", encoding="utf-8")
    dst.chmod(0o600)
    pump(io.BytesIO(b"rip=192.0.2.7\n"), dst)
    assert dst.read_text(encoding="utf-8") == "old line\nrip=[ip]\n"
    assert stat.S_IMODE(dst.stat().st_mode) == 0o600


def test_pump_writes_each_line_as_it_arrives_through_a_pipe(tmp_path: Path) -> None:
    dst = tmp_path / "daemon.log"
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader:
        thread = threading.Thread(target=pump, args=(reader, dst))
        thread.start()
        os.write(write_fd, b"first from 192.0.2.7\n")
        for _ in range(500):  # the line must show up before the writer closes the pipe
            if dst.exists() and dst.read_text(encoding="utf-8"):
                break
            threading.Event().wait(0.01)
        assert dst.read_text(encoding="utf-8") == "first from [ip]\n"
        os.write(write_fd, b"second\n")
        os.close(write_fd)
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert dst.read_text(encoding="utf-8") == "first from [ip]\nsecond\n"

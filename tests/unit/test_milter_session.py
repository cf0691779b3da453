"""A milter conversation as Postfix holds it, against the submission policy
(ddmail_milter.session) with a real SQLite database holding the mail_senders view."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ddmail_milter import protocol
from ddmail_milter.ownership import SenderOwnership
from ddmail_milter.ratelimit import SendLimit
from ddmail_milter.session import LOOKUP_TEMPFAIL, Policy, serve_connection


def senders_db(path: Path) -> str:
    url = f"sqlite:///{path}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE owned (sender TEXT, login TEXT)"))
        conn.execute(text("CREATE VIEW mail_senders AS SELECT sender, login FROM owned"))
        conn.execute(
            text(
                "INSERT INTO owned VALUES ('alice@own.example', 'alice@own.example'),"
                " ('team@own.example', 'alice@own.example')"
            )
        )
    engine.dispose()
    return url


def converse(policy: Policy, packets: list[tuple[bytes, bytes]]) -> list[tuple[str, bytes]]:
    """Send PACKETS, then QUIT; return every reply of the milter."""

    async def run() -> list[tuple[str, bytes]]:
        client_reader = asyncio.StreamReader()
        server_reader = asyncio.StreamReader()
        for command, data in packets:
            server_reader.feed_data(protocol.packet(command, data))
        server_reader.feed_data(protocol.packet(b"Q"))
        server_reader.feed_eof()

        class Writer:
            def write(self, data: bytes) -> None:
                client_reader.feed_data(data)

            async def drain(self) -> None:
                return None

            def close(self) -> None:
                client_reader.feed_eof()

        await serve_connection(policy, server_reader, Writer())  # type: ignore[arg-type]
        replies = []
        while True:
            try:
                replies.append(await protocol.read_packet(client_reader))
            except asyncio.IncompleteReadError:
                return replies

    return asyncio.run(run())


OPTNEG = (b"O", (6).to_bytes(4, "big") + (0x1FF).to_bytes(4, "big") + (0x1FFFFF).to_bytes(4, "big"))


def message(login: str, sender: str, headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    packets = [OPTNEG, (b"D", b"M{auth_authen}\0" + login.encode() + b"\0")]
    packets.append((b"M", f"<{sender}>\0".encode()))
    packets.append((b"R", b"<friend@example.net>\0"))
    packets += [(b"L", f"{n}\0{v}\0".encode()) for n, v in headers]
    packets += [(b"N", b""), (b"E", b"")]
    return packets


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    return Policy(SenderOwnership(senders_db(tmp_path / "db.sqlite3")), SendLimit(2, 3600))


def test_negotiation_skips_connect_and_helo_so_no_client_address_is_sent(policy: Policy) -> None:
    (command, data), *_ = converse(policy, [OPTNEG])
    assert command == "O"
    skips = int.from_bytes(data[8:12], "big")
    assert skips & protocol.NOCONNECT and skips & protocol.NOHELO


def test_owned_alias_is_accepted_and_forged_from_refused(policy: Policy) -> None:
    ok = converse(
        policy, message("Alice@own.example", "alice@own.example", [("From", "team@own.example")])
    )
    assert ok[-1] == ("c", b"")
    bad = converse(
        policy, message("alice@own.example", "alice@own.example", [("From", "bob@own.example")])
    )
    assert bad[-1][0] == "y" and bad[-1][1].startswith(b"550 5.7.1 From address <bob@own.example>")


def test_null_sender_and_missing_login_are_refused_at_mail(policy: Policy) -> None:
    null = converse(policy, message("alice@own.example", "", [("From", "alice@own.example")]))
    assert (b"553 5.7.1" in null[1][1]) and null[1][0] == "y"
    anon = converse(policy, message("", "alice@own.example", [("From", "alice@own.example")]))
    assert anon[1][0] == "y" and anon[1][1].startswith(b"530 5.7.0")


def test_lookup_failure_defers_instead_of_accepting(tmp_path: Path) -> None:
    broken = Policy(SenderOwnership(f"sqlite:///{tmp_path / 'empty.sqlite3'}"), SendLimit(2, 60))
    replies = converse(
        broken, message("alice@own.example", "alice@own.example", [("From", "alice@own.example")])
    )
    assert replies[-1] == ("y", LOOKUP_TEMPFAIL.encode() + b"\0")


def test_over_the_limit_is_deferred_at_mail(policy: Policy) -> None:
    for _ in range(2):
        converse(
            policy,
            message("alice@own.example", "alice@own.example", [("From", "alice@own.example")]),
        )
    replies = converse(
        policy, message("alice@own.example", "alice@own.example", [("From", "alice@own.example")])
    )
    assert replies[1][0] == "y" and replies[1][1].startswith(b"450 4.7.1")


def test_a_message_with_more_recipients_than_the_limit_is_refused_not_deferred(
    policy: Policy,
) -> None:
    packets = message("alice@own.example", "alice@own.example", [("From", "alice@own.example")])
    extra = [(b"R", f"<friend{i}@example.net>\0".encode()) for i in range(2)]
    at = packets.index((b"R", b"<friend@example.net>\0")) + 1
    replies = converse(policy, packets[:at] + extra + packets[at:])
    assert replies[-1][0] == "y" and replies[-1][1].startswith(b"550 5.7.1"), replies
    # Nothing was counted: the login can still send a message that fits.
    replies = converse(
        policy, message("alice@own.example", "alice@own.example", [("From", "alice@own.example")])
    )
    assert all(r[0] != "y" for r in replies), replies

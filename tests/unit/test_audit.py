"""Audit trail: every entry commits to the one before it, so edits show up in verify()."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import make_url, text

from ddmail_common.db import Base, Database
from ddmail_web.audit import (
    GENESIS_HASH,
    AuditEntry,
    append,
    audit_key,
    close,
    entries,
    entry_hash,
    verify,
)
from tests.stackrun import postgres_url

pytestmark = pytest.mark.postgres
_PG_ADMIN = "host=127.0.0.1 user=ddmail_test password=ddmail_test dbname=postgres"
KEY = audit_key(b"a test secret of at least thirty-two bytes")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    pg_url = postgres_url()
    url = pg_url or f"sqlite:///{tmp_path}/t.sqlite3"
    database = Database(url, session_info={"audit_key": KEY})
    Base.metadata.create_all(database.engine)
    yield database
    database.engine.dispose()
    if pg_url:  # each test gets a database of its own; dropped so that runs leave none behind
        with psycopg.connect(_PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {make_url(pg_url).database}")


def _fill(db: Database, account: str = "alice", count: int = 5) -> None:
    for i in range(count):
        with db.session() as s:
            append(s, account, account, "login", f"mailbox{i}@example.org")


def _sql(db: Database, statement: str, **params: Any) -> None:
    with db.session() as s:
        s.execute(text(statement), params)


def test_appended_entries_form_a_chain(db: Database) -> None:
    _fill(db)
    with db.session() as s:
        newest_first = entries(s, "alice")
        assert verify(s, "alice") is None
    chain = list(reversed(newest_first))
    assert [e.seq for e in chain] == [1, 2, 3, 4, 5]
    assert chain[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(chain):
        assert after.prev_hash == before.hash
    for e in chain:
        expected = entry_hash(
            KEY, e.account, e.seq, e.created_at, e.actor, e.action, e.object, e.prev_hash
        )
        assert e.hash == expected


def test_entries_are_newest_first_and_limited(db: Database) -> None:
    _fill(db)
    with db.session() as s:
        assert [e.seq for e in entries(s, "alice", limit=2)] == [5, 4]
        assert entries(s, "nobody") == []
        with pytest.raises(ValueError):
            entries(s, "alice", limit=0)


def test_accounts_have_separate_chains(db: Database) -> None:
    _fill(db, "alice", 3)
    _fill(db, "bob", 2)
    with db.session() as s:
        assert [e.seq for e in entries(s, "bob")] == [2, 1]
        assert entries(s, "bob")[-1].prev_hash == GENESIS_HASH
        assert verify(s, "alice") is None
        assert verify(s, "bob") is None
        assert verify(s, "nobody") is None


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("created_at", 1),
        ("actor", "mallory"),
        ("action", "logout"),
        ("object", ""),
        ("prev_hash", "f" * 64),
        ("hash", "e" * 64),
    ],
)
@pytest.mark.parametrize("seq", [1, 3, 5])
def test_a_modified_field_breaks_the_chain_at_that_entry(
    db: Database, column: str, value: object, seq: int
) -> None:
    _fill(db)
    statement = f"UPDATE web_audit SET {column} = :v WHERE account = 'alice' AND seq = :s"
    _sql(db, statement, v=value, s=seq)
    with db.session() as s:
        assert verify(s, "alice") == seq


def test_a_deleted_entry_breaks_the_chain_at_the_next_one(db: Database) -> None:
    _fill(db)
    _sql(db, "DELETE FROM web_audit WHERE account = 'alice' AND seq = 3")
    with db.session() as s:
        assert verify(s, "alice") == 4


def test_a_renumbered_entry_breaks_the_chain(db: Database) -> None:
    _fill(db)
    _sql(db, "UPDATE web_audit SET seq = 9 WHERE account = 'alice' AND seq = 5")
    with db.session() as s:
        assert verify(s, "alice") == 9


def test_swapped_entries_break_the_chain_at_the_first(db: Database) -> None:
    _fill(db)
    # Via a free seq, as the unique constraint forbids two entries with one seq at any moment.
    _sql(db, "UPDATE web_audit SET seq = 100 WHERE account = 'alice' AND seq = 2")
    _sql(db, "UPDATE web_audit SET seq = 2 WHERE account = 'alice' AND seq = 3")
    _sql(db, "UPDATE web_audit SET seq = 3 WHERE account = 'alice' AND seq = 100")
    with db.session() as s:
        assert verify(s, "alice") == 2


def test_an_entry_moved_to_another_account_breaks_both_chains(db: Database) -> None:
    _fill(db, "alice")
    _fill(db, "bob", 2)
    _sql(db, "UPDATE web_audit SET account = 'bob', seq = 3 WHERE account = 'alice' AND seq = 3")
    with db.session() as s:
        assert verify(s, "alice") == 4
        assert verify(s, "bob") == 3


def test_an_inserted_entry_breaks_the_chain_even_with_a_correct_hash(db: Database) -> None:
    _fill(db)
    for seq in (5, 4):  # make room for a forged entry 4
        _sql(
            db,
            "UPDATE web_audit SET seq = :n WHERE account = 'alice' AND seq = :s",
            n=seq + 1,
            s=seq,
        )
    with db.session() as s:
        third = entries(s, "alice")[-3]
        assert third.seq == 3
        forged = entry_hash(KEY, "alice", 4, 1, "alice", "logout", "", third.hash)
        s.add(
            AuditEntry(
                account="alice", seq=4, created_at=1, actor="alice", action="logout",
                object="", prev_hash=third.hash, hash=forged,
            )
        )  # fmt: skip
    with db.session() as s:
        assert verify(s, "alice") == 5


def test_concurrent_appends_produce_a_gapless_chain(db: Database) -> None:
    names, per_thread = ("t1", "t2", "t3"), 20
    errors: list[BaseException] = []
    start = threading.Barrier(len(names))

    def worker(name: str) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                with db.session() as s:
                    append(s, "alice", name, "login", f"{name}-{i}")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.session() as s:
        chain = entries(s, "alice", limit=1000)
        assert verify(s, "alice") is None
    assert sorted(e.seq for e in chain) == list(range(1, len(names) * per_thread + 1))
    assert sorted(e.object for e in chain) == sorted(
        f"{n}-{i}" for n in names for i in range(per_thread)
    )


def test_an_append_waits_for_the_open_transaction_of_another(db: Database) -> None:
    _fill(db, count=2)
    appended = threading.Event()
    seqs: list[int] = []

    def other_request() -> None:
        with db.session() as s:
            seqs.append(append(s, "alice", "system", "password_changed").seq)
        appended.set()

    with db.session() as s:
        append(s, "bob", "bob", "login")  # the caller's own earlier work in the transaction
        assert append(s, "alice", "alice", "mailbox_added", "x@example.org").seq == 3
        other = threading.Thread(target=other_request)
        other.start()
        assert not appended.wait(0.5)  # it must not read the last entry before we commit
    other.join()
    assert seqs == [4]
    with db.session() as s:
        assert verify(s, "alice") is None
        assert [e.seq for e in entries(s, "bob")] == [1]


def test_an_object_that_looks_like_an_ip_address_is_stored_redacted(db: Database) -> None:
    with db.session() as s:
        entry = append(s, "alice", "alice", "login", "from 192.0.2.7")
    assert entry.object == "from [ip]"
    with db.session() as s:
        assert verify(s, "alice") is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("account", ""),
        ("account", "a" * 65),
        ("actor", ""),
        ("actor", "a" * 65),
        ("actor", "alice\nlogin"),
        ("actor", "alice\x00"),
        ("action", "login\r"),
        ("action", "log\u200bin"),  # zero-width space
        ("action", "a" * 65),
        ("object", "x" * 301),
        ("object", "x\ty"),
    ],
)
def test_wrong_input_is_refused(db: Database, field: str, value: str) -> None:
    args = {"account": "alice", "actor": "alice", "action": "login", "object": "x"} | {field: value}
    with db.session() as s, pytest.raises(ValueError):
        append(s, **args)
    with db.session() as s:
        assert entries(s, "alice") == []


def test_the_longest_allowed_values_are_stored(db: Database) -> None:
    with db.session() as s:
        append(s, "a" * 64, "b" * 64, "c" * 64, "d" * 300)
    with db.session() as s:
        assert verify(s, "a" * 64) is None


# Short texts over a small alphabet of separator-like characters make shifted field boundaries
# ("ab","c" against "a","bc") likely, which a naive concatenation would hash alike.
_field = st.text(alphabet='ab,:"\\', max_size=4)
_entry = st.tuples(_field, st.integers(0, 3), _field, _field, _field)


@given(a=_entry, b=_entry)
def test_entry_hash_tells_different_entries_apart(
    a: tuple[str, int, str, str, str], b: tuple[str, int, str, str, str]
) -> None:
    def h(fields: tuple[str, int, str, str, str]) -> str:
        account, seq, actor, action, obj = fields
        return entry_hash(KEY, account, seq, 0, actor, action, obj, GENESIS_HASH)

    assert (h(a) == h(b)) == (a == b)


def test_a_chain_rewritten_without_the_audit_key_is_reported(db: Database) -> None:
    """Someone who can write the table but not read the key file recomputes every hash after an
    edit with plain SHA-256 (or any other key): verify still reports the edited entry."""
    _fill(db, count=3)
    with db.session() as s:
        chain = list(reversed(entries(s, "alice")))
    prev = GENESIS_HASH
    for e in chain:
        obj = "evil@example.org" if e.seq == 2 else e.object
        forged = entry_hash(
            b"not the key", "alice", e.seq, e.created_at, e.actor, e.action, obj, prev
        )
        _sql(
            db,
            "UPDATE web_audit SET object = :o, prev_hash = :p, hash = :h WHERE id = :i",
            o=obj,
            p=prev,
            h=forged,
            i=e.id,
        )
        prev = forged
    with db.session() as s:
        assert verify(s, "alice") == 1


def test_a_database_handle_without_the_audit_key_cannot_append(tmp_path: Path) -> None:
    keyless = Database(f"sqlite:///{tmp_path}/k.sqlite3")
    Base.metadata.create_all(keyless.engine)
    with pytest.raises(RuntimeError), keyless.session() as s:
        append(s, "alice", "alice", "login")
    with keyless.session() as s:
        assert s.execute(text("SELECT count(*) FROM web_audit")).scalar() == 0


def test_closing_a_trail_leaves_one_final_entry_that_verifies(db: Database) -> None:
    """Account deletion: nothing of the history stays, and the final entry is a chain of its
    own that verify() accepts; other accounts' trails are untouched."""
    _fill(db, "alice")
    _fill(db, "bob", 3)
    with db.session() as s:
        close(s, "alice", "alice", "account_deleted")
    with db.session() as s:
        rows = entries(s, "alice")
        assert [(e.seq, e.action, e.object, e.prev_hash) for e in rows] == [
            (1, "account_deleted", "", GENESIS_HASH)
        ]
        assert verify(s, "alice") is None
        assert len(entries(s, "bob")) == 3 and verify(s, "bob") is None


def test_a_closed_trail_is_still_signed(db: Database) -> None:
    _fill(db, "alice")
    with db.session() as s:
        close(s, "alice", "alice", "account_deleted")
    _sql(db, "UPDATE web_audit SET actor = 'admin' WHERE account = 'alice'")
    with db.session() as s:
        assert verify(s, "alice") == 1

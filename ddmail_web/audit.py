"""A per-account, hash-chained audit trail of what happened to an account, shown to its owner.

Each entry commits to the one before it: its hash covers its own fields and the previous entry's
hash (64 zeros for the first). Editing, deleting, reordering or inserting an entry therefore
breaks every later link, which ``verify`` reports. The hash is an HMAC under the audit key, a
secret file of the panel that is not in the database (``secrets.audit``): someone who can write
the table but not read that file cannot recompute the chain after an edit. What a chain
cannot show is that its newest entries were dropped; comparing its head with one kept elsewhere
(such as in a backup, or the owner's last export) catches that. The key travels with the panel's
database handle (``Database(session_info={"audit_key": ...})``, see ``panel_database``), so
every caller that appends or verifies uses the same key.

When an account is deleted its trail is closed (``close``): every entry goes and one final
entry, that the account was deleted and by whom, starts the chain afresh as its only entry (seq
1, linked to the genesis hash), so ``verify`` accepts it like any chain. Nothing of the history
(addresses, login times) outlives the account; the final entry is signed like any other.

Privacy: callers pass only usernames, fixed action names and object names (a mailbox address, a
domain), never an IP address, a user agent or a secret. As a backstop an object that
``logredact.redact`` would change is stored in its redacted form.

Concurrent appends for one account: each reads the last entry and adds the next seq, so two
at once would both pick the same seq. The unique (account, seq) constraint guarantees that at
most one of them commits, but retrying the loser is not enough: under steady contention (many
failed logins for one account across workers) a loser can lose again and again, which a test
with just two threads on PostgreSQL showed. So ``append`` makes appends for an account wait for
each other instead, from the read until the caller's transaction ends:

- PostgreSQL: a transaction-scoped advisory lock on the account (two-key form with its own class
  number, so it cannot meet single-key advisory locks of other code). Appends for other
  accounts are not held up, except by a rare hash collision of account names.
- SQLite: a no-op UPDATE takes the database's only write lock before the read. In WAL mode a
  transaction that has read cannot write once another has committed after its read, so the
  lock must come first. The default pysqlite driver opens the transaction at that UPDATE;
  callers must not have read inside a SAVEPOINT of their own before appending.

The unique constraint stays as the backstop: a gap in this locking would surface as an
IntegrityError, never as a forked chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from sqlalchemy import (
    Integer,
    String,
    UniqueConstraint,
    delete,
    false,
    func,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from ddmail_common.db import Base
from ddmail_common.logredact import redact

GENESIS_HASH = "0" * 64
# Arbitrary, only distinct from other users of two-key advisory locks ("DMAU" in ASCII).
_PG_LOCK_CLASS = 0x444D4155
ACCOUNT_MAX = 64
ACTOR_MAX = 64
ACTION_MAX = 64
OBJECT_MAX = 300


class AuditEntry(Base):
    __tablename__ = "web_audit"
    __table_args__ = (UniqueConstraint("account", "seq", name="uq_web_audit_account_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(String(ACCOUNT_MAX), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(ACTOR_MAX))  # a username, "system" or "admin"
    action: Mapped[str] = mapped_column(String(ACTION_MAX))  # "login", "mailbox_added", ...
    object: Mapped[str] = mapped_column(String(OBJECT_MAX))  # "" when the action has none
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


def audit_key(secret: bytes) -> bytes:
    """The chain's HMAC key, derived from the secret file (domain-separated from other uses)."""
    return hashlib.sha256(b"ddmail-audit\x00" + secret).digest()


def _key(session: Session) -> bytes:
    key = session.info.get("audit_key")
    if not isinstance(key, bytes):
        raise RuntimeError("this database handle carries no audit key (use panel_database)")
    return key


def entry_hash(
    key: bytes,
    account: str,
    seq: int,
    created_at: int,
    actor: str,
    action: str,
    object: str,
    prev_hash: str,
) -> str:
    """HMAC-SHA256 (hex) of an entry's fields under KEY. JSON with sorted keys is unambiguous:
    no choice of field values can make two different entries encode the same way."""
    fields = {
        "account": account,
        "seq": seq,
        "created_at": created_at,
        "actor": actor,
        "action": action,
        "object": object,
        "prev_hash": prev_hash,
    }
    encoded = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, encoded.encode("ascii"), hashlib.sha256).hexdigest()


def _check(name: str, value: str, limit: int, *, may_be_empty: bool = False) -> None:
    # Newlines and other invisible characters would let a value pose as several entries or hide
    # part of itself when the trail is displayed or exported.
    if not value and not may_be_empty:
        raise ValueError(f"audit {name} is empty")
    if len(value) > limit:
        raise ValueError(f"audit {name} is longer than {limit} characters")
    if not value.isprintable():
        raise ValueError(f"audit {name} contains control or invisible characters")


def append(session: Session, account: str, actor: str, action: str, object: str = "") -> AuditEntry:
    """Add the account's next entry inside the caller's transaction and return it."""
    key = _key(session)  # before anything is written
    _check("account", account, ACCOUNT_MAX)
    _check("actor", actor, ACTOR_MAX)
    _check("action", action, ACTION_MAX)
    object = redact(object)  # redaction may lengthen it, so the checks come after
    _check("object", object, OBJECT_MAX, may_be_empty=True)
    _serialize_appends(session, account)
    last = session.execute(
        select(AuditEntry.seq, AuditEntry.hash)
        .where(AuditEntry.account == account)
        .order_by(AuditEntry.seq.desc())
        .limit(1)
    ).first()
    seq, prev_hash = (last.seq + 1, last.hash) if last else (1, GENESIS_HASH)
    created_at = int(time.time())
    entry = AuditEntry(
        account=account,
        seq=seq,
        created_at=created_at,
        actor=actor,
        action=action,
        object=object,
        prev_hash=prev_hash,
        hash=entry_hash(key, account, seq, created_at, actor, action, object, prev_hash),
    )
    session.add(entry)
    session.flush()  # a constraint violation belongs to this call, not to the caller's commit
    return entry


def close(session: Session, account: str, actor: str, action: str) -> AuditEntry:
    """Replace the account's whole trail by one final entry, inside the caller's transaction
    (account deletion: only the fact of the deletion stays)."""
    _key(session)  # refuse before anything is deleted
    _serialize_appends(session, account)
    session.execute(delete(AuditEntry).where(AuditEntry.account == account))
    return append(session, account, actor, action)


def forget(session: Session, account: str) -> None:
    """Delete the account's whole trail: for an account nobody ever logged into, whose trail
    nobody could ever read (a registration flood must not leave a row per account behind)."""
    _serialize_appends(session, account)
    session.execute(delete(AuditEntry).where(AuditEntry.account == account))


def _serialize_appends(session: Session, account: str) -> None:
    """Make other appends for ACCOUNT wait until this transaction ends."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(_PG_LOCK_CLASS, func.hashtext(account))))
    elif dialect == "sqlite":
        session.execute(
            update(AuditEntry).where(false()).values(seq=AuditEntry.seq),
            execution_options={"synchronize_session": False},
        )
    else:
        raise NotImplementedError(f"audit appends are not serialized on {dialect}")


def verify(session: Session, account: str) -> int | None:
    """Return the seq of the first entry whose link is broken, or None if the chain is intact.

    An entry is broken when its seq is not the one after its predecessor's (an entry was deleted
    or inserted), its prev_hash is not its predecessor's hash, or its hash does not match its
    fields. The stored columns are read afresh rather than through the session's identity map,
    which could still hold the values as this session last saw them.
    """
    rows = session.execute(
        select(
            AuditEntry.seq,
            AuditEntry.created_at,
            AuditEntry.actor,
            AuditEntry.action,
            AuditEntry.object,
            AuditEntry.prev_hash,
            AuditEntry.hash,
        )
        .where(AuditEntry.account == account)
        .order_by(AuditEntry.seq)
        .execution_options(yield_per=500)
    )
    key = _key(session)
    expected_seq, expected_prev = 1, GENESIS_HASH
    for row in rows:
        recomputed = entry_hash(
            key, account, row.seq, row.created_at, row.actor, row.action, row.object, row.prev_hash
        )
        if row.seq != expected_seq or row.prev_hash != expected_prev or row.hash != recomputed:
            return int(row.seq)
        expected_seq, expected_prev = row.seq + 1, row.hash
    return None


def entries(session: Session, account: str, limit: int = 200) -> list[AuditEntry]:
    """The account's newest LIMIT entries, newest first."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    query = (
        select(AuditEntry)
        .where(AuditEntry.account == account)
        .order_by(AuditEntry.seq.desc())
        .limit(limit)
    )
    return list(session.scalars(query))

"""DKIM keys' life (DN 38): every signing domain gets a key at once, a rotation publishes the
next key and switches only after the wait AND once DNS serves it, the old key stays published
for the grace period, then its row and file go; the private key never reaches the database;
a crash between file and row leaves nothing that signs."""

from __future__ import annotations

import base64
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import text

from ddmail_backend.dkim import ACTIVE, PUBLISHED, RETIRING, SELECTOR_MAP, DkimKeys, key_path
from ddmail_backend.dkim_names import customer_cname, record_name, txt_value
from ddmail_backend.dnscheck import FakeResolver
from ddmail_backend.models import ACCOUNT, GLOBAL, DkimKey, Domain
from ddmail_common.config import DkimSettings
from ddmail_common.db import Database
from ddmail_common.errors import ApiError
from ddmail_common.migrate import upgrade
from tests.stackrun import postgres_url

pytestmark = pytest.mark.postgres

GLOBAL_DOMAIN = "example.net"
T0 = 1_800_000_000
TTL = 300
SETTINGS = DkimSettings(switch_margin_seconds=60, grace_seconds=3600, rotate_days=30)
WAIT = TTL + SETTINGS.switch_margin_seconds


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = postgres_url() or f"sqlite:///{tmp_path / 'dkim.sqlite3'}"
    upgrade(url)
    database = Database(url)
    with database.session() as s:
        s.add(Domain(name=GLOBAL_DOMAIN, kind=GLOBAL, enabled=True, verified=True, created_at=0))
    yield database
    with database.session() as s:  # PostgreSQL is shared between tests
        s.query(DkimKey).delete()
        s.query(Domain).delete()


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


@pytest.fixture
def keys(db: Database, resolver: FakeResolver, tmp_path: Path) -> DkimKeys:
    (tmp_path / "dkim").mkdir()
    return DkimKeys(db, replace(SETTINGS, key_dir=tmp_path / "dkim"), resolver, GLOBAL_DOMAIN, TTL)


def states(keys: DkimKeys, domain: str = GLOBAL_DOMAIN) -> dict[str, str]:
    return {k.selector: k.state for k in keys.list(domain)}


def selector_map(keys: DkimKeys) -> str:
    return (keys.settings.key_dir / SELECTOR_MAP).read_text()


def publish(resolver: FakeResolver, keys: DkimKeys, domain: str = GLOBAL_DOMAIN) -> None:
    """What the operator does after `ddmail admin dns zone`: publish every key's TXT record."""
    for key in keys.list(domain):
        resolver.records[(key.record, "TXT")] = [key.value]


def add_customer_domain(db: Database, name: str, verified: bool) -> None:
    with db.session() as s:
        s.add(
            Domain(
                name=name,
                kind=ACCOUNT,
                account="acct",
                enabled=True,
                verified=verified,
                token="t",
                created_at=0,
            )
        )


def test_a_global_domain_gets_a_signing_key_whose_private_half_is_only_a_file(
    keys: DkimKeys, db: Database
) -> None:
    assert keys.maintain(T0)["created"] == 1
    (view,) = keys.list()
    assert (view.selector, view.state, view.record) == (
        "ddm1",
        ACTIVE,
        "ddm1._domainkey.example.net",
    )
    path = key_path(keys.settings.key_dir, GLOBAL_DOMAIN, "ddm1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert view.value == txt_value(base64.b64encode(der).decode())
    assert private.key_size == 2048  # type: ignore[union-attr]
    # Nothing of the private key is in any column of the table.
    body = "".join(path.read_text().splitlines()[1:-1])
    with db.engine.connect() as conn:
        dumped = repr(list(conn.execute(text("SELECT * FROM backend_dkim_keys"))))
    assert body[:64] not in dumped and "PRIVATE" not in dumped
    assert selector_map(keys) == "example.net ddm1\n"


def test_rotation_switches_only_after_the_wait_and_once_dns_serves_the_next_key(
    keys: DkimKeys, resolver: FakeResolver
) -> None:
    keys.maintain(T0)
    (started,) = keys.rotate(GLOBAL_DOMAIN, now=T0 + 10)
    assert (started.selector, started.state, started.switch_after) == (
        "ddm2",
        PUBLISHED,
        T0 + 10 + WAIT,
    )
    keys.maintain(T0 + 10 + WAIT)  # the wait is over, but DNS does not serve the key yet
    assert states(keys) == {"ddm1": ACTIVE, "ddm2": PUBLISHED}
    publish(resolver, keys)
    keys.maintain(T0 + 10 + WAIT - 1)  # DNS serves it, but a resolver may still cache the old
    assert states(keys) == {"ddm1": ACTIVE, "ddm2": PUBLISHED}
    assert selector_map(keys) == "example.net ddm1\n"
    assert keys.maintain(T0 + 10 + WAIT)["switched"] == 1
    assert states(keys) == {"ddm1": RETIRING, "ddm2": ACTIVE}
    assert selector_map(keys) == "example.net ddm2\n"
    old = key_path(keys.settings.key_dir, GLOBAL_DOMAIN, "ddm1")
    retire_at = next(k.retire_at for k in keys.list() if k.state == RETIRING)
    assert retire_at == T0 + 10 + WAIT + SETTINGS.grace_seconds
    keys.maintain(retire_at - 1)
    assert states(keys) == {"ddm1": RETIRING, "ddm2": ACTIVE} and old.exists()
    assert keys.maintain(retire_at)["retired"] == 1
    assert states(keys) == {"ddm2": ACTIVE} and not old.exists()


def test_an_unreachable_resolver_delays_the_switch(keys: DkimKeys, resolver: FakeResolver) -> None:
    keys.maintain(T0)
    keys.rotate(GLOBAL_DOMAIN, now=T0)
    publish(resolver, keys)
    resolver.down = True
    keys.maintain(T0 + WAIT)
    assert states(keys) == {"ddm1": ACTIVE, "ddm2": PUBLISHED}


def test_rotating_again_during_a_rotation_or_the_grace_period_is_refused(
    keys: DkimKeys, resolver: FakeResolver
) -> None:
    keys.maintain(T0)
    keys.rotate(GLOBAL_DOMAIN, now=T0)
    with pytest.raises(ApiError, match="under way") as under_way:
        keys.rotate(GLOBAL_DOMAIN, now=T0 + 1)
    assert under_way.value.status == 409
    publish(resolver, keys)
    keys.maintain(T0 + WAIT)
    with pytest.raises(ApiError, match="grace period until"):
        keys.rotate(GLOBAL_DOMAIN, now=T0 + WAIT + 1)
    assert keys.rotate(now=T0 + WAIT + 1) == []  # every domain: skipped, not an error
    with pytest.raises(ApiError) as unknown:
        keys.rotate("nobody.example", now=T0)
    assert unknown.value.status == 404


def test_a_scheduled_rotation_starts_after_rotate_days(keys: DkimKeys) -> None:
    keys.maintain(T0)
    assert keys.maintain(T0 + 30 * 86400 - 1)["rotated"] == 0
    assert keys.maintain(T0 + 30 * 86400)["rotated"] == 1
    assert states(keys) == {"ddm1": ACTIVE, "ddm2": PUBLISHED}


def test_customer_domains_sign_once_verified_and_their_records_sit_in_the_providers_zone(
    keys: DkimKeys, db: Database
) -> None:
    add_customer_domain(db, "customer.org", verified=False)
    keys.maintain(T0)
    assert keys.list("customer.org") == []
    with db.session() as s:
        s.query(Domain).filter_by(name="customer.org").update({"verified": True})
    keys.maintain(T0 + 1)
    (view,) = keys.list("customer.org")
    assert view.record == "ddm1.customer.org.dkim.example.net"
    assert customer_cname("customer.org", "ddm1", GLOBAL_DOMAIN) == (
        "ddm1._domainkey.customer.org",
        record_name("customer.org", "ddm1", GLOBAL_DOMAIN, False),
    )
    assert selector_map(keys) == "customer.org ddm1\nexample.net ddm1\n"


def test_a_removed_domain_loses_its_keys(keys: DkimKeys, db: Database) -> None:
    add_customer_domain(db, "gone.org", verified=True)
    keys.maintain(T0)
    path = key_path(keys.settings.key_dir, "gone.org", "ddm1")
    assert path.exists()
    with db.session() as s:
        s.query(Domain).filter_by(name="gone.org").delete()
    assert keys.maintain(T0 + 1)["removed"] == 1
    assert keys.list("gone.org") == [] and not path.exists()
    assert selector_map(keys) == "example.net ddm1\n"


def test_a_key_whose_row_cannot_be_written_leaves_no_file(
    keys: DkimKeys, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_session() -> None:
        raise RuntimeError("database gone")

    monkeypatch.setattr(db, "session", broken_session)
    with pytest.raises(RuntimeError):
        keys._create(GLOBAL_DOMAIN, "ddm1", ACTIVE, T0)
    assert list(keys.settings.key_dir.iterdir()) == []


def test_a_key_file_without_a_row_is_swept(keys: DkimKeys) -> None:
    stray = keys.settings.key_dir / "example.net.ddm2.key"
    stray.write_text("left by a crash")
    keys.maintain(T0)
    assert not stray.exists()
    assert key_path(keys.settings.key_dir, GLOBAL_DOMAIN, "ddm1").exists()


def test_a_lost_key_file_gets_a_new_key_instead_of_a_silent_signer(keys: DkimKeys) -> None:
    keys.maintain(T0)
    path = key_path(keys.settings.key_dir, GLOBAL_DOMAIN, "ddm1")
    before = keys.list()[0].value
    path.unlink()
    keys.maintain(T0 + 1)
    (view,) = keys.list()
    assert view.state == ACTIVE and view.value != before and path.exists()


def test_concurrent_runs_make_one_key_per_domain(keys: DkimKeys) -> None:
    """The periodic thread and a request thread at once (the backend runs both)."""
    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(keys.maintain, T0) for _ in range(4)]:
            future.result()
    (view,) = keys.list()
    path = key_path(keys.settings.key_dir, GLOBAL_DOMAIN, view.selector)
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert view.value == txt_value(base64.b64encode(der).decode())  # the file is the row's key


def test_the_job_loop_maintains_keys_once_a_period_not_at_every_turn(
    keys: DkimKeys, db: Database
) -> None:
    """Every turn of the job loop (2 s) used to read every domain and key and stat every key
    file; switches and retirements are due at minutes' granularity at the finest."""
    created = {"created": 1, "switched": 0, "retired": 0, "rotated": 0, "removed": 0}
    assert keys.maintain_now_and_then() == created
    add_customer_domain(db, "later.example", verified=True)
    assert keys.maintain_now_and_then() is None  # within maintain_every_seconds
    assert "later.example" not in {v.domain for v in keys.list()}
    keys._last_maintenance -= keys.settings.maintain_every_seconds
    assert keys.maintain_now_and_then() == created

"""Domain squatting (issue 8 item 11): several pending claims, the first to verify wins, claims
expire, the service's own names are refused, held domains are re-verified (fake DNS)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ddmail_backend.app import create_app as backend_app
from ddmail_backend.domains import CLAIM_DAYS, RECHECK_SECONDS, Domains
from ddmail_common.db import Database
from ddmail_common.errors import ApiError
from ddmail_web import periodic
from ddmail_web.audit import AuditEntry
from ddmail_web.state import panel_database
from tests.services import Services, running_services
from tests.stackrun import postgres_url, wait_until

pytestmark = pytest.mark.postgres
DAY = 86400
ALICE, MALLORY = "acct-alice", "acct-mallory"


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Services]:
    with running_services(tmp_path, postgres_url()) as services:
        yield services


def claim(svc: Services, account: str, name: str) -> dict[str, object]:
    return svc.web.call("POST", "/v1/domains", {"account": account, "name": name})


def verify(svc: Services, account: str, name: str) -> dict[str, object]:
    return svc.web.call("POST", "/v1/domains/verify", {"account": account, "name": name})


def publish(svc: Services, name: str, token: object) -> None:
    svc.resolver.records[(f"_ddmail-verify.{name}", "TXT")] = [f"ddmail-verify={token}"]


def own(svc: Services, account: str) -> dict[str, dict[str, object]]:
    listed = svc.web.call("GET", f"/v1/domains?account={account}")["domains"]
    return {d["name"]: d for d in listed}


def domains(svc: Services) -> Domains:
    return Domains(Database(svc.cfg.db_url), svc.resolver)


def sql(svc: Services, query: str, **params: object) -> list[tuple[object, ...]]:
    engine = create_engine(svc.cfg.db_url)
    with engine.begin() as conn:
        result = conn.execute(text(query), params)
        rows = list(result) if result.returns_rows else []
    engine.dispose()
    return rows


def test_a_pending_claim_does_not_block_the_real_owner(svc: Services) -> None:
    squat = claim(svc, MALLORY, "gmail-like.example")
    real = claim(svc, ALICE, "gmail-like.example")
    assert squat["state"] == real["state"] == "pending" and squat["token"] != real["token"]
    # Mallory cannot publish a record in the real owner's zone; Alice can.
    publish(svc, "gmail-like.example", real["token"])
    assert verify(svc, MALLORY, "gmail-like.example")["verified"] is False
    assert verify(svc, ALICE, "gmail-like.example")["verified"] is True
    assert own(svc, ALICE)["gmail-like.example"]["state"] == "active"


def test_the_first_to_verify_wins_and_the_other_claims_are_told(svc: Services) -> None:
    first = claim(svc, ALICE, "shared.example")
    claim(svc, MALLORY, "shared.example")
    publish(svc, "shared.example", first["token"])
    assert verify(svc, ALICE, "shared.example")["state"] == "active"
    lost = own(svc, MALLORY)["shared.example"]
    assert lost["state"] == "superseded" and lost["since"] is not None
    with pytest.raises(ApiError) as exc:
        verify(svc, MALLORY, "shared.example")
    assert exc.value.status == 409 and "first" in exc.value.message
    # The panel's periodic run writes the loser's audit trail once.
    db = panel_database(svc.cfg)
    assert periodic.record_domain_events(db, svc.web) == 1
    assert periodic.record_domain_events(db, svc.web) == 0
    # A new claim on a held domain is refused; the lost claim can be removed.
    with pytest.raises(ApiError):
        claim(svc, "acct-third", "shared.example")
    svc.web.call("POST", "/v1/domains/remove", {"account": MALLORY, "name": "shared.example"})
    assert "shared.example" not in own(svc, MALLORY)


@pytest.mark.parametrize(
    "name", ["ddmail.test", "mail.ddmail.test", "shop.ddmail.test", "A.B.DDMAIL.TEST"]
)
def test_the_global_domain_and_its_subdomains_cannot_be_claimed(svc: Services, name: str) -> None:
    with pytest.raises(ApiError) as exc:
        claim(svc, ALICE, name)
    assert exc.value.status == 422 and "belongs to this service" in exc.value.message


def test_pending_claims_expire_in_the_periodic_job(svc: Services) -> None:
    claim(svc, ALICE, "stale.example")
    claim(svc, MALLORY, "fresh.example")
    old = int(time.time()) - CLAIM_DAYS * DAY - 60
    sql(svc, "UPDATE backend_domain_claims SET created_at = :t WHERE name = 'stale.example'", t=old)
    assert domains(svc).maintain()["claims_expired"] == 1
    assert "stale.example" not in own(svc, ALICE)
    assert "fresh.example" in own(svc, MALLORY)
    # The same work runs in the backend's job loop, without anyone calling it.
    sql(svc, "UPDATE backend_domain_claims SET created_at = :t", t=old)
    app = backend_app(svc.cfg, resolver=svc.resolver, run_jobs=True)
    try:
        wait_until(lambda: not sql(svc, "SELECT id FROM backend_domain_claims"), 15, "expiry")
    finally:
        app.extensions["ddmail_jobs"].stop()


def test_verified_domains_are_suspended_on_failure_and_restored_on_success(
    svc: Services,
) -> None:
    made = claim(svc, ALICE, "mine.example")
    publish(svc, "mine.example", made["token"])
    verify(svc, ALICE, "mine.example")
    secret = "recovery-secret-of-alice-" + "x" * 20
    svc.web.call("POST", "/v1/accounts/recovery-key", {"account": ALICE, "secret": secret})
    svc.web.call("POST", "/v1/mailboxes", {"account": ALICE, "address": "me@mine.example"})
    now = int(time.time())
    assert domains(svc).maintain(now)["suspended"] == 0  # checked at verification: not due
    svc.resolver.records.clear()  # the record is gone
    later = now + RECHECK_SECONDS + 1
    assert domains(svc).maintain(later)["suspended"] == 1
    held = own(svc, ALICE)["mine.example"]
    assert held["state"] == "suspended" and held["enabled"] is False
    # Suspended, not deleted: the mailbox is kept, but Postfix no longer serves the domain.
    assert sql(svc, "SELECT address FROM backend_mailboxes") == [("me@mine.example",)]
    assert sql(svc, "SELECT domain FROM mail_domains WHERE domain = 'mine.example'") == []
    with pytest.raises(ApiError) as exc:
        svc.web.call("POST", "/v1/mailboxes", {"account": ALICE, "address": "b@mine.example"})
    assert "suspended" in exc.value.message
    # A DNS outage is no verdict: nothing changes.
    svc.resolver.down = True
    assert domains(svc).maintain(later + 2 * RECHECK_SECONDS) == {
        "claims_expired": 0,
        "suspended": 0,
        "restored": 0,
    }
    svc.resolver.down = False
    publish(svc, "mine.example", made["token"])
    assert domains(svc).maintain(later + 2 * RECHECK_SECONDS)["restored"] == 1
    assert own(svc, ALICE)["mine.example"]["state"] == "active"
    assert sql(svc, "SELECT domain FROM mail_domains WHERE domain = 'mine.example'") == [
        ("mine.example",)
    ]
    # Both changes reach the owner's audit trail.
    db = panel_database(svc.cfg)
    periodic.record_domain_events(db, svc.web)
    with db.session() as s:
        actions = {
            (e.action, e.object.split(" ")[0])
            for e in s.query(AuditEntry).filter(AuditEntry.account == ALICE)
        }
    assert {("domain_suspended", "mine.example"), ("domain_restored", "mine.example")} <= actions


def test_claims_per_account_are_bounded(svc: Services) -> None:
    for i in range(20):
        claim(svc, MALLORY, f"d{i}.example")
    with pytest.raises(ApiError) as exc:
        claim(svc, MALLORY, "one-more.example")
    assert exc.value.status == 422


def test_migration_0008_turns_unverified_domains_into_claims_and_back(tmp_path: Path) -> None:
    from alembic import command

    from ddmail_common.migrate import alembic_config

    url = postgres_url() or f"sqlite:///{tmp_path / 'm.sqlite3'}"
    cfg = alembic_config(url)
    command.upgrade(cfg, "0007")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO backend_domains "
                "(name, kind, account, enabled, verified, token, created_at) VALUES "
                "('p.example', 'account', 'a', TRUE, FALSE, 'tok', 5), "
                "('v.example', 'account', 'a', TRUE, TRUE, 'tok2', 5)"
            )
        )
    command.upgrade(cfg, "0008")
    with engine.begin() as conn:
        claims = list(conn.execute(text("SELECT name, account, token FROM backend_domain_claims")))
        held = list(conn.execute(text("SELECT name FROM backend_domains")))
    assert claims == [("p.example", "a", "tok")] and held == [("v.example",)]
    command.downgrade(cfg, "0007")
    with engine.begin() as conn:
        back = set(conn.execute(text("SELECT name, verified FROM backend_domains")))
    engine.dispose()
    assert back == {("v.example", True), ("p.example", False)}


def test_domains_page_tells_the_owner_of_a_lost_claim_and_of_a_suspension(svc: Services) -> None:
    from ddmail_web.app import create_app as panel_app
    from tests.webclient import Browser

    browser = Browser(panel_app(svc.cfg))
    browser.login(browser.register())
    browser.post("/settings/domains", {"domain": "contested.example"})
    winner = claim(svc, ALICE, "contested.example")
    publish(svc, "contested.example", winner["token"])
    verify(svc, ALICE, "contested.example")
    page = " ".join(browser.get("/settings/domains").get_data(as_text=True).split())
    assert "claimed by another account" in page
    assert "Another account proved ownership of contested.example first" in page
    browser.post("/settings/domains", {"domain": "mine.example"})
    listed = browser.get("/settings/domains").get_data(as_text=True)
    # The lost claim's record is no longer shown: the only token on the page is mine.example's.
    (token,) = re.findall(r"ddmail-verify=([A-Za-z0-9_-]+)", listed)
    publish(svc, "mine.example", token)
    browser.post("/settings/domains/verify", {"domain": "mine.example"})
    svc.resolver.records.pop(("_ddmail-verify.mine.example", "TXT"))
    domains(svc).maintain(int(time.time()) + RECHECK_SECONDS + 1)
    page = " ".join(browser.get("/settings/domains").get_data(as_text=True).split())
    assert 'id="domain-suspended"' in page and "Nothing is deleted" in page

"""Registration under a flood from one client: atomic counters, an exact cap on never-funded
accounts, nobody locked out for good, and voucher-only registration as the operator's switch."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from flask import Flask

from ddmail_common.db import Database
from ddmail_web import funds, throttle
from ddmail_web.account_data import delete_everything
from tests.services import Services, db_rows, db_run
from tests.webclient import Browser, codes

pytestmark = pytest.mark.postgres


def set_web(app: Flask, **changes: object) -> None:
    state = app.extensions["ddmail_web"]
    state.settings = dataclasses.replace(state.settings, **changes)


def run_in_threads(count: int, work: object) -> None:
    threads = [threading.Thread(target=work) for _ in range(count)]  # type: ignore[arg-type]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)


def test_counters_never_lose_concurrent_updates(env: tuple[Services, Flask]) -> None:
    db = Database(env[0].cfg.db_url)
    seen: list[int] = []
    lock = threading.Lock()

    def hammer() -> None:
        for _ in range(25):
            with db.session() as s:
                value = throttle.hit(s, "test-counter", 600)
            with lock:
                seen.append(value)

    run_in_threads(8, hammer)
    # Every hit got its own count: none was lost to a read-modify-write race.
    assert sorted(seen) == list(range(1, 201))
    with db.session() as s:
        assert throttle.count(s, "test-counter", 600) == 200
    db.engine.dispose()


def test_concurrent_registrations_never_exceed_the_cap_on_never_funded_accounts(
    env: tuple[Services, Flask],
) -> None:
    svc, app = env
    set_web(app, unfunded_accounts_max=5)
    statuses: list[int] = []
    lock = threading.Lock()

    def register() -> None:
        resp = Browser(app).post("/register")
        with lock:
            statuses.append(resp.status_code)

    run_in_threads(14, register)
    assert db_rows(svc, "SELECT count(*) FROM web_accounts") == [(5,)]
    assert statuses.count(200) == 5 and len(statuses) == 14


def test_a_flood_of_registrations_does_not_stop_a_later_one(
    env: tuple[Services, Flask],
    browser: Browser,
) -> None:
    flooder = Browser(env[1])
    for _ in range(80):  # more than the old hourly cap (60) that locked everyone out
        assert flooder.post("/register").status_code == 200
    reg = browser.register()
    assert browser.login(reg).status_code == 302


def test_when_unclaimed_accounts_fill_the_room_they_go_and_registration_reopens(
    env: tuple[Services, Flask],
    browser: Browser,
) -> None:
    svc, app = env
    set_web(app, unfunded_accounts_max=3)
    person = browser.register()
    browser.login(person)  # someone who uses the account
    flooder = Browser(app)
    for _ in range(2):
        assert flooder.post("/register").status_code == 200
    refused = flooder.post("/register")
    assert refused.status_code == 503
    assert "register with a voucher code" in refused.get_data(as_text=True)
    assert db_rows(svc, "SELECT count(*) FROM web_accounts") == [(3,)]
    state = app.extensions["ddmail_web"]
    billing = funds.Billing(state.db, state.backend, state.settings)
    hours = state.settings.purge_unclaimed_hours
    counts = billing.run(
        lambda account, trace: delete_everything(state.db, state.backend, account, "system", trace),
        int(time.time()) + hours * 3600 + 60,
    )
    assert counts["deleted"] == 2
    assert db_rows(svc, "SELECT id FROM web_accounts") == [(person.account,)]
    # Accounts nobody ever logged into leave no audit entry behind (or a flood would grow the
    # database without bound after all).
    assert db_rows(svc, "SELECT DISTINCT account FROM web_audit") == [(person.account,)]
    late = Browser(app)
    assert late.login(late.register()).status_code == 302


def test_a_flood_that_never_logs_in_only_replaces_its_own_accounts(
    env: tuple[Services, Flask],
    browser: Browser,
) -> None:
    """With the room full of accounts nobody uses, a new registration takes the place of the
    oldest one (once it is old enough for its maker to have logged in): people get in, the
    database stays bounded, and the evicted account leaves nothing behind."""
    svc, app = env
    set_web(app, unfunded_accounts_max=3)
    person = browser.register_and_login()
    flooder = Browser(app)
    flood = [flooder.register().account for _ in range(2)]
    newcomer = Browser(app)
    assert newcomer.post("/register").status_code == 503  # the flood's accounts are too new
    db_run(svc, "UPDATE web_accounts SET created_at = created_at - 700")
    late = newcomer.register_and_login()
    accounts = {r[0] for r in db_rows(svc, "SELECT id FROM web_accounts")}
    assert accounts == {person.account, flood[1], late.account}
    assert db_rows(svc, "SELECT count(*) FROM web_audit WHERE account = :a", a=flood[0]) == [(0,)]
    # The flood goes on: it replaces its own last account, never someone who logged in.
    again = flooder.register().account
    accounts = {r[0] for r in db_rows(svc, "SELECT id FROM web_accounts")}
    assert accounts == {person.account, late.account, again}


def test_voucher_only_registration_is_the_operators_switch(
    env: tuple[Services, Flask],
    browser: Browser,
) -> None:
    svc, app = env
    set_web(app, registration="voucher", new_accounts_enabled=False, unfunded_accounts_max=1)
    page = browser.get("/register").get_data(as_text=True)
    assert "new accounts need a voucher code" in page
    without = browser.post("/register")
    assert without.status_code == 403
    assert db_rows(svc, "SELECT count(*) FROM web_accounts") == [(0,)]
    with app.extensions["ddmail_web"].db.session() as s:
        code, other = funds.create_vouchers(s, 2, 500)
    made = browser.post("/register", {"voucher": code})
    assert made.status_code == 200 and "account" in codes(made.get_data(as_text=True))
    assert db_rows(svc, "SELECT enabled FROM web_accounts") in ([(1,)], [(True,)])
    assert db_rows(svc, "SELECT sum(amount_cents) FROM web_ledger") == [(500,)]
    assert Browser(app).post("/register", {"voucher": code}).status_code == 400  # used up
    # A voucher registration is funded, so the cap on never-funded accounts does not apply.
    assert Browser(app).post("/register", {"voucher": other}).status_code == 200

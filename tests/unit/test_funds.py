"""Funds: vouchers, payment credits, monthly charges, disabling and deleting unpaid accounts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from ddmail_web import funds
from ddmail_web.account_data import delete_everything
from ddmail_web.app import create_app
from ddmail_web.models import Account
from ddmail_web.state import panel_database
from tests.services import Services, db_rows, running_services
from tests.stackrun import postgres_url
from tests.webclient import Browser, codes

pytestmark = pytest.mark.postgres
DAY = 86400


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Services, Flask, Browser]]:
    with running_services(tmp_path, postgres_url()) as svc:
        app = create_app(svc.cfg)
        yield svc, app, Browser(app)


def billing(svc: Services) -> funds.Billing:
    return funds.Billing(panel_database(svc.cfg), svc.admin, svc.cfg.web)


def test_concurrent_redemptions_credit_a_voucher_once(
    env: tuple[Services, Flask, Browser],
) -> None:
    """Several panel workers redeeming one code at once (the outside review got two or three
    credits on SQLite, which ignores FOR UPDATE)."""
    svc, _, browser = env
    account = browser.register().account
    db = panel_database(svc.cfg)
    with db.session() as s:
        code = funds.create_vouchers(s, 1, 700)[0]
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def redeem() -> None:
        start.wait()
        try:
            with db.session() as s:
                funds.redeem(s, account, "someone", code)
            outcomes.append("credited")
        except funds.FundsError:
            outcomes.append("refused")

    workers = [threading.Thread(target=redeem) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert sorted(outcomes) == ["credited"] + ["refused"] * 7
    rows = db_rows(svc, "SELECT account, amount_cents FROM web_ledger WHERE kind = 'voucher'")
    assert rows == [(account, 700)]


def test_amounts_are_parsed_strictly() -> None:
    assert funds.parse_amount("12.5") == 1250
    assert funds.parse_amount("3") == 300
    for bad in ["", "-1", "0", "1.234", "1e3", "ten"]:
        with pytest.raises(funds.FundsError):
            funds.parse_amount(bad)


def test_voucher_is_redeemed_once(env: tuple[Services, Flask, Browser]) -> None:
    svc, _, browser = env
    reg = browser.register()
    browser.login(reg)
    with panel_database(svc.cfg).session() as s:
        code = funds.create_vouchers(s, 1, 500)[0]
    assert code.encode() not in repr(db_rows(svc, "SELECT * FROM web_vouchers")).encode()
    page = browser.post(
        "/settings/funds/voucher",
        {"code": code.lower()},
        token_from="/settings/funds",
        follow_redirects=True,
    )
    assert "5.00 EUR added to your funds" in page.get_data(as_text=True)
    again = browser.post(
        "/settings/funds/voucher",
        {"code": code},
        token_from="/settings/funds",
        follow_redirects=True,
    )
    assert "not valid or was already used" in again.get_data(as_text=True)
    funds_page = browser.get("/settings/funds").get_data(as_text=True)
    assert "<td>5.00 EUR</td>" in funds_page  # the history states the currency too
    assert "No payments yet" not in funds_page
    assert codes(funds_page)["payment-reference"]


def test_a_new_account_is_told_how_to_pay(env: tuple[Services, Flask, Browser]) -> None:
    _, _, browser = env
    browser.register_and_login()
    page = browser.get("/settings/funds").get_data(as_text=True)
    assert "<td>0.00 EUR</td>" in page and "No payments yet." in page
    paying = page.split("Pay with the reference", 1)[1].split("<h2>", 1)[0]
    # The reference to put into the payment is right there, and whom to ask is linked.
    assert f"<code>{codes(page)['payment-reference']}</code>" in paying
    assert 'href="/contact"' in paying
    vouchers = page.split("Redeem a voucher", 1)[1].split("<h2>", 1)[0]
    assert "Vouchers come from the people who run this service" in vouchers
    assert 'href="/contact"' in vouchers


def test_disabled_account_sees_only_funds_keeps_receiving_and_cannot_send_or_log_in(
    env: tuple[Services, Flask, Browser],
) -> None:
    svc, _, browser = env
    reg = browser.register()
    browser.login(reg)
    browser.post("/settings/mailboxes", {"local_part": "ivan", "domain": "ddmail.test"})
    billing(svc).set_enabled(reg.account, False, "admin")
    assert browser.get("/settings/mailboxes").headers["Location"].endswith("/settings/funds")
    banner = browser.get("/settings/funds").get_data(as_text=True)
    # What the page tells matches what the mail system does (mail is stored, not deferred).
    assert "disabled until funds are added" in banner and "still\nreceived and stored" in banner
    assert "deferred" not in banner
    # Mail is accepted as for any account (no 450 that reveals the payment status) ...
    assert db_rows(svc, "SELECT address FROM mail_mailboxes") == [("ivan@ddmail.test",)]
    # ... but the mailbox may neither send nor log in (Dovecot's deny passdb reads this view).
    assert db_rows(svc, "SELECT sender FROM mail_senders") == []
    assert db_rows(svc, "SELECT address FROM mail_recipient_access") == [("ivan@ddmail.test",)]
    reference = db_rows(svc, "SELECT payment_reference FROM web_accounts")[0][0]
    billing(svc).credit(str(reference).lower(), 1000)
    assert browser.get("/settings/mailboxes").status_code == 200
    assert db_rows(svc, "SELECT sender FROM mail_senders") == [("ivan@ddmail.test",)]
    assert db_rows(svc, "SELECT address FROM mail_recipient_access") == []


def test_monthly_charge_disables_then_deletes_an_account_without_funds(
    env: tuple[Services, Flask, Browser],
) -> None:
    svc, _, browser = env
    reg = browser.register()
    browser.login(reg)
    browser.post("/settings/mailboxes", {"local_part": "judy", "domain": "ddmail.test"})
    b = billing(svc)
    reference = str(db_rows(svc, "SELECT payment_reference FROM web_accounts")[0][0])
    b.credit(reference, 150)  # one month at 1.00, then short

    def delete(account: str, leave_trace: bool) -> None:
        delete_everything(b.db, b.backend, account, "system", leave_trace)

    now = int(time.time())
    assert b.run(delete, now + 31 * DAY) == {"charged": 1, "deleted": 0}
    assert db_rows(svc, "SELECT enabled FROM web_accounts") in ([(1,)], [(True,)])
    assert b.run(delete, now + 62 * DAY) == {"charged": 1, "deleted": 0}
    assert db_rows(svc, "SELECT enabled FROM web_accounts") in ([(0,)], [(False,)])
    with b.db.session() as s:
        disabled_at = s.get(Account, reg.account).disabled_at  # type: ignore[union-attr]
    assert b.run(delete, int(disabled_at or 0) + 31 * DAY) == {"charged": 0, "deleted": 1}
    assert db_rows(svc, "SELECT count(*) FROM keyhandler_mailbox_keys") == [(0,)]
    assert db_rows(svc, "SELECT count(*) FROM web_accounts") == [(0,)]


def test_never_funded_accounts_are_purged_and_gratis_ones_kept(
    env: tuple[Services, Flask, Browser],
) -> None:
    svc, _, browser = env
    first, second = browser.register(), Browser(env[1]).register()
    browser.login(first)  # claimed: kept for the full period (unclaimed ones go sooner)
    b = billing(svc)
    with b.db.session() as s:
        row = s.get(Account, second.account)
        assert row is not None
        row.gratis = True
    deleted: list[tuple[str, bool]] = []

    def delete(account: str, leave_trace: bool) -> None:
        deleted.append((account, leave_trace))

    now = int(time.time())
    assert b.run(delete, now + 10 * DAY) == {"charged": 0, "deleted": 0}
    assert b.run(delete, now + 31 * DAY) == {"charged": 0, "deleted": 1}
    assert deleted == [(first.account, True)]  # someone used it: its final entry stays


def test_pricing_funds_and_help_pages_state_the_same_price_from_config(tmp_path: Path) -> None:
    import dataclasses
    import re

    with running_services(tmp_path, postgres_url()) as svc:
        web = dataclasses.replace(svc.cfg.web, price_cents_per_gb_month=250, currency="CHF")
        browser = Browser(create_app(dataclasses.replace(svc.cfg, web=web)))
        browser.login(browser.register())
        stated = [
            re.findall(r'id="price">([^<]+)<', browser.get(page).get_data(as_text=True))
            for page in ("/pricing", "/settings/funds", "/help")
        ]
    assert stated == [["2.50 CHF per started GB per month"]] * 3

"""The settings page as an overview (issue 13): every area with a one-line status, the backend's
counts from one call (GET /v1/overview), the panel's own from its database, and a page that
still renders, saying what it cannot know, when the backend or the keyhandler is down."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from flask import Flask

from ddmail_common.client import ServiceClient
from ddmail_common.errors import ApiError
from ddmail_web import funds, totp
from tests.services import Services
from tests.webclient import Browser, Registered, codes, freeze_time

pytestmark = pytest.mark.postgres


def status(browser: Browser) -> dict[str, str]:
    """The overview's lines, by area."""
    page = browser.get("/settings")
    assert page.status_code == 200
    found = re.findall(r'id="status-([a-z]+)">([^<]*)</p>', page.get_data(as_text=True))
    return dict(found)


def overview(svc: Services, account: str) -> dict[str, object]:
    return svc.web.call("GET", f"/v1/overview?account={account}")


def verify(svc: Services, account: str, name: str) -> None:
    token = svc.web.call("POST", "/v1/domains", {"account": account, "name": name})["token"]
    svc.resolver.records[(f"_ddmail-verify.{name}", "TXT")] = [f"ddmail-verify={token}"]
    svc.web.call("POST", "/v1/domains/verify", {"account": account, "name": name})


def test_the_backend_counts_an_accounts_mail_in_one_answer(
    env: tuple[Services, Flask], public_key: tuple[str, str]
) -> None:
    svc, app = env
    browser = Browser(app)
    account = browser.register_and_login().account
    no_keys = {"keys": 0, "mailboxes": 0, "held_back": 0}
    empty = {"mailboxes": {}, "aliases": 0, "domains": {}, "openpgp": no_keys}
    assert overview(svc, account) == empty
    for local in ("alice", "bob"):
        svc.web.call(
            "POST", "/v1/mailboxes", {"account": account, "address": f"{local}@ddmail.test"}
        )
    body = {"account": account, "address": "team@ddmail.test", "destinations": ["bob@ddmail.test"]}
    svc.web.call("POST", "/v1/aliases", body)
    verify(svc, account, "verified.example")
    svc.web.call("POST", "/v1/domains", {"account": account, "name": "waiting.example"})
    key, fingerprint = public_key
    svc.web.call("POST", "/v1/openpgp/keys", {"account": account, "key": key})
    body = {"account": account, "address": "alice@ddmail.test", "fingerprint": fingerprint}
    svc.web.call("POST", "/v1/openpgp/activate", body)
    assert overview(svc, account) == {
        "mailboxes": {"active": 2},
        "aliases": 1,
        "domains": {"active": 1, "pending": 1},
        "openpgp": {"keys": 1, "mailboxes": 1, "held_back": 0},
    }
    # Another account's overview counts none of it.
    assert overview(svc, "another-account") == empty
    # The keyhandler down: the backend still answers, without the OpenPGP counts.
    svc.stop_keyhandler()
    assert overview(svc, account)["openpgp"] is None


def test_the_overview_asks_for_an_account_and_only_the_panel_may_ask(
    env: tuple[Services, Flask],
) -> None:
    svc, _ = env
    with pytest.raises(ApiError) as missing:
        svc.web.call("GET", "/v1/overview")
    assert missing.value.status == 400
    reports = ServiceClient("tlsrpt", svc.cfg.secret("tlsrpt"), svc.cfg.backend_socket, "backend")
    with pytest.raises(ApiError) as refused:
        reports.call("GET", "/v1/overview?account=x")
    assert refused.value.status == 403


def test_each_area_says_how_it_stands_and_the_counts_follow_changes(
    env: tuple[Services, Flask],
) -> None:
    svc, app = env
    browser = Browser(app)
    reg = browser.register_and_login()
    assert status(browser) == {
        "mailboxes": "0 mailboxes",
        "aliases": "0 aliases",
        "domains": "0 domains",
        "openpgp": "0 keys",
        "funds": "Balance: 0.00 EUR",
        "users": "1 user (you)",
        "sessions": "1 session (this one)",
        "totp": "Off: logins need no code",
    }
    browser.post("/settings/mailboxes", {"local_part": "alice", "domain": "ddmail.test"})
    assert status(browser)["mailboxes"] == "1 mailbox"
    browser.post("/settings/mailboxes", {"local_part": "bob", "domain": "ddmail.test"})
    browser.post(
        "/settings/aliases",
        {"local_part": "team", "domain": "ddmail.test", "destination": ["alice@ddmail.test"]},
    )
    browser.post("/settings/domains", {"domain": "waiting.example"})
    lines = status(browser)
    assert lines["mailboxes"] == "2 mailboxes" and lines["aliases"] == "1 alias"
    assert lines["domains"] == "1 domain: 1 waiting for DNS"
    verify(svc, reg.account, "verified.example")
    assert status(browser)["domains"] == "2 domains: 1 verified, 1 waiting for DNS"
    # A second user and a second session of this one.
    browser.post_with_keyfile("/settings/users", {}, reg.keyfile)
    Browser(app).login(reg)
    lines = status(browser)
    assert lines["users"] == "2 users, you included"
    assert lines["sessions"] == "2 sessions, this one included"


def test_one_time_codes_on_and_off(env: tuple[Services, Flask]) -> None:
    browser = Browser(env[1])
    reg = browser.register_and_login()
    secret = codes(browser.get("/settings/totp").get_data(as_text=True))["totp-secret"]
    now = int(time.time())
    browser.post_with_keyfile("/settings/totp", {"totp": totp.code_at(secret, now)}, reg.keyfile)
    assert status(browser)["totp"] == "On: every login needs a code"
    with freeze_time(now + 30):  # a code works once: the next one turns them off
        later = totp.code_at(secret, now + 30)
        browser.post_with_keyfile("/settings/totp", {"totp": later}, reg.keyfile)
    assert status(browser)["totp"] == "Off: logins need no code"


def test_the_balance_reads_as_the_funds_page_writes_it(env: tuple[Services, Flask]) -> None:
    app = env[1]
    browser = Browser(app)
    browser.register_and_login()
    with app.extensions["ddmail_web"].db.session() as s:
        [code] = funds.create_vouchers(s, 1, 1250)
    browser.post("/settings/funds/voucher", {"code": code}, token_from="/settings/funds")
    assert status(browser)["funds"] == "Balance: 12.50 EUR"
    assert "<td>12.50 EUR</td>" in browser.get("/settings/funds").get_data(as_text=True)


def logged_in(app: Flask) -> tuple[Browser, Registered]:
    browser = Browser(app)
    reg = browser.register_and_login()
    browser.post("/settings/mailboxes", {"local_part": "alice", "domain": "ddmail.test"})
    return browser, reg


def test_the_backend_down_leaves_a_page_that_says_so(
    env: tuple[Services, Flask], tmp_path: Path
) -> None:
    app = env[1]
    browser, _ = logged_in(app)
    app.extensions["ddmail_web"].backend.socket_path = tmp_path / "nothing-listens-here.sock"
    page = browser.get("/settings")
    assert page.status_code == 200
    lines = status(browser)
    for area in ("mailboxes", "aliases", "domains", "openpgp"):
        assert lines[area] == "Status unavailable right now"
    assert 'class="status unknown" id="status-mailboxes"' in page.get_data(as_text=True)
    # What the panel keeps itself is still there, and so is every link and form.
    assert lines["funds"] == "Balance: 0.00 EUR" and lines["totp"].startswith("Off")
    assert 'href="/settings/mailboxes"' in page.get_data(as_text=True)
    assert 'action="/settings/keyfile"' in page.get_data(as_text=True)


def test_the_keyhandler_down_hides_only_the_key_count(env: tuple[Services, Flask]) -> None:
    svc, app = env
    browser, _ = logged_in(app)
    svc.stop_keyhandler()
    lines = status(browser)
    assert lines["openpgp"] == "Status unavailable right now"
    assert lines["mailboxes"] == "1 mailbox"

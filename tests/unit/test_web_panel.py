"""The panel through a browser-like client, with the real backend and keyhandler behind it."""

from __future__ import annotations

import json
import re
import time

import pytest
from flask import Flask

from ddmail_web.reauth import KEYFILE_NEEDED
from tests.services import Services, db_rows, db_run
from tests.webclient import Browser, codes, freeze_time

pytestmark = pytest.mark.postgres

NO_JS = re.compile(r"<script|\son[a-z]+\s*=", re.IGNORECASE)


def test_registration_shows_credentials_once_and_the_key_file_downloads_once(
    browser: Browser,
) -> None:
    resp = browser.post("/register")
    assert resp.headers["Cache-Control"] == "no-store"
    found = codes(resp.get_data(as_text=True))
    assert set(found) >= {"account", "username", "password"}
    assert "cannot be recovered" in resp.get_data(as_text=True)
    first = browser.download_keyfile(resp.get_data(as_text=True))
    assert first.status_code == 200 and b"key: " in first.data
    assert first.headers["Content-Disposition"].startswith("attachment")
    again = browser.download_keyfile(resp.get_data(as_text=True))  # the same form again
    assert again.status_code == 410


def test_login_with_all_three_factors(browser: Browser) -> None:
    reg = browser.register()
    resp = browser.login(reg)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/settings")
    page = browser.get("/settings")
    assert f"Logged in as user: {reg.username}" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    cookie = next(c for c in resp.headers.getlist("Set-Cookie") if "ddmail_session" in c)
    assert cookie.startswith("__Host-ddmail_session=")
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie


@pytest.mark.parametrize("what", ["password", "keyfile", "user"])
def test_every_login_failure_gets_the_same_answer(browser: Browser, what: str) -> None:
    reg = browser.register()
    if what == "password":
        resp = browser.login(reg, password="wrong-password")
    elif what == "keyfile":
        resp = browser.login(reg, keyfile=b"key: " + b"A" * 88 + b"\n")
    else:
        reg.username = "nosuchuser00"
        resp = browser.login(reg)
    assert resp.status_code == 401
    assert "Login failed: the username, password, key file or code is not right." in resp.get_data(
        as_text=True
    )
    assert "Logged in as user: Not logged in" in browser.get("/").get_data(as_text=True)


def test_the_database_holds_only_a_hash_of_the_session_token(
    env: tuple[Services, Flask], browser: Browser
) -> None:
    reg = browser.register()
    resp = browser.login(reg)
    token = (
        next(c for c in resp.headers.getlist("Set-Cookie") if "ddmail_session" in c)
        .split("=", 1)[1]
        .split(";")[0]
    )
    stored = db_rows(env[0], "SELECT token_hash FROM web_sessions")
    assert stored and all(token not in str(row) for row in stored)


def test_password_guessing_without_the_key_file_cannot_lock_the_owner_out(
    browser: Browser,
) -> None:
    reg = browser.register()
    attacker = Browser(browser.app)
    for _ in range(15):
        attacker.login(reg, password="guess", keyfile=b"key: " + b"B" * 88 + b"\n")
    assert browser.login(reg).status_code == 302


def test_password_guessing_with_the_key_file_is_throttled(browser: Browser) -> None:
    reg = browser.register()
    for _ in range(10):
        assert browser.login(reg, password="guess").status_code == 401
    assert browser.login(reg).status_code == 401  # even the right password, for a while


def test_logout_ends_the_session(browser: Browser) -> None:
    browser.register_and_login()
    resp = browser.post("/logout", token_from="/settings")
    assert resp.status_code == 302
    assert browser.get("/settings").status_code == 302


def test_a_user_sees_and_ends_other_sessions(browser: Browser) -> None:
    reg = browser.register()
    other = Browser(browser.app)
    other.login(reg)
    browser.login(reg)
    page = browser.get("/settings/sessions").get_data(as_text=True)
    ids = re.findall(r'name="session" value="(\d+)"', page)
    assert len(ids) == 2
    # The other browser's session is the older one (listed last).
    browser.post("/settings/sessions/revoke", {"session": ids[-1]}, token_from="/settings/sessions")
    assert other.get("/settings").status_code == 302
    assert browser.get("/settings").status_code == 200


def test_mailbox_lifecycle_through_the_panel(browser: Browser) -> None:
    reg = browser.register_and_login()
    resp = browser.post("/settings/mailboxes", {"local_part": "alice", "domain": "ddmail.test"})
    assert resp.headers["Cache-Control"] == "no-store"
    password = codes(resp.get_data(as_text=True))["mailbox-password"]
    assert "alice@ddmail.test" in browser.get("/settings/mailboxes").get_data(as_text=True)
    changed = browser.post(
        "/settings/mailboxes/password",
        {"mailbox": "alice@ddmail.test", "current_password": password},
        token_from="/settings/mailboxes",
    )
    new = codes(changed.get_data(as_text=True))["mailbox-password"]
    assert new != password
    reset = browser.post_with_keyfile(
        "/settings/mailboxes/reset",
        {"mailbox": "alice@ddmail.test"},
        reg.keyfile,
        token_from="/settings/mailboxes",
    )
    assert "mailbox-password" in codes(reset.get_data(as_text=True))
    refused = browser.post_with_keyfile(
        "/settings/mailboxes/remove",
        {"mailbox": "alice@ddmail.test"},
        reg.keyfile,
        token_from="/settings/mailboxes",
        follow_redirects=True,
    )
    assert "Tick the box" in refused.get_data(as_text=True)
    removed = browser.post_with_keyfile(
        "/settings/mailboxes/remove",
        {"mailbox": "alice@ddmail.test", "confirm": "y"},
        reg.keyfile,
        token_from="/settings/mailboxes",
        follow_redirects=True,
    )
    assert "can never be read again" in removed.get_data(as_text=True)
    audit = browser.get("/settings/audit").get_data(as_text=True)
    for action in (
        "mailbox added",
        "mailbox password changed",
        "mailbox password reset",
        "mailbox removed",
        "login",
    ):
        assert action in audit


def test_reset_with_another_key_file_is_refused(browser: Browser) -> None:
    browser.register_and_login()
    browser.post("/settings/mailboxes", {"local_part": "bob", "domain": "ddmail.test"})
    resp = browser.post_with_keyfile(
        "/settings/mailboxes/reset",
        {"mailbox": "bob@ddmail.test"},
        b"key: " + b"C" * 88,
        token_from="/settings/mailboxes",
        follow_redirects=True,
    )
    assert resp.status_code == 403 and KEYFILE_NEEDED in resp.get_data(as_text=True)


def test_invalid_mailbox_name_keeps_the_input_and_says_what_to_fix(browser: Browser) -> None:
    browser.register_and_login()
    resp = browser.post("/settings/mailboxes", {"local_part": "bad name!", "domain": "ddmail.test"})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 400
    assert "Use letters, digits" in page and 'value="bad name!"' in page


def test_reserved_mailbox_name_is_explained(browser: Browser) -> None:
    browser.register_and_login()
    page = browser.post(
        "/settings/mailboxes", {"local_part": "postmaster", "domain": "ddmail.test"}
    ).get_data(as_text=True)
    assert "postmaster@ddmail.test is reserved: the service uses it" in page


def test_alias_and_domain_pages(browser: Browser) -> None:
    browser.register_and_login()
    browser.post("/settings/mailboxes", {"local_part": "carol", "domain": "ddmail.test"})
    resp = browser.post(
        "/settings/aliases",
        {"local_part": "team", "domain": "ddmail.test", "destination": ["carol@ddmail.test"]},
        follow_redirects=True,
    )
    assert "team@ddmail.test now delivers to carol@ddmail.test" in resp.get_data(as_text=True)
    resp = browser.post("/settings/domains", {"domain": "example.org"}, follow_redirects=True)
    page = resp.get_data(as_text=True)
    assert "_ddmail-verify.example.org" in page
    assert codes(page)["verification-token"].startswith("ddmail-verify=")


def test_backend_down_is_a_clear_message_and_changes_nothing(
    env: tuple[Services, Flask], browser: Browser
) -> None:
    browser.register_and_login()
    env[0].stop_keyhandler()
    resp = browser.post("/settings/mailboxes", {"local_part": "dave", "domain": "ddmail.test"})
    assert "not reachable right now" in resp.get_data(as_text=True)
    assert db_rows(env[0], "SELECT count(*) FROM backend_mailboxes") == [(0,)]


def test_every_post_without_csrf_token_is_refused(browser: Browser) -> None:
    browser.register_and_login()
    for rule in browser.app.url_map.iter_rules():
        if "POST" in (rule.methods or set()):
            resp = browser.client.post(rule.rule, data={}, base_url="https://localhost")
            assert resp.status_code == 400, rule.rule
            assert "security token" in resp.get_data(as_text=True), rule.rule


def test_every_route_declares_who_may_use_it(env: tuple[Services, Flask]) -> None:
    app = env[1]
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        assert getattr(view, "_ddmail_access", None) in (
            "public",
            "authenticated",
            "reauthenticated",
        ), rule.rule


def test_settings_pages_need_a_login(browser: Browser) -> None:
    for rule in browser.app.url_map.iter_rules():
        view = browser.app.view_functions[rule.endpoint]
        if getattr(view, "_ddmail_access", "public") != "public" and "GET" in (rule.methods or ()):
            resp = browser.get(rule.rule)
            assert resp.status_code == 302 and resp.headers["Location"].endswith("/login")


def test_no_page_has_javascript(browser: Browser) -> None:
    browser.register_and_login()
    for rule in browser.app.url_map.iter_rules():
        if "GET" in (rule.methods or ()) and not rule.arguments and rule.endpoint != "static":
            resp = browser.get(rule.rule)
            if resp.mimetype == "text/html":
                assert not NO_JS.search(resp.get_data(as_text=True)), rule.rule


def test_oversized_request_gets_a_friendly_413(browser: Browser) -> None:
    resp = browser.client.post("/login", data={"user": "x" * 300_000}, base_url="https://localhost")
    assert resp.status_code == 413
    assert "larger than this form accepts" in resp.get_data(as_text=True)


def test_new_panel_password_needs_the_key_file_and_logs_out_other_sessions(
    browser: Browser,
) -> None:
    reg = browser.register()
    other = Browser(browser.app)
    other.login(reg)
    browser.login(reg)
    refused = browser.post_with_keyfile(
        "/settings/password",
        {},
        b"key: " + b"D" * 88,
        token_from="/settings",
        follow_redirects=True,
    )
    assert refused.status_code == 403 and KEYFILE_NEEDED in refused.get_data(as_text=True)
    resp = browser.post_with_keyfile(
        "/settings/password",
        {},
        reg.keyfile,
        token_from="/settings",
    )
    new = codes(resp.get_data(as_text=True))["password"]
    assert resp.headers["Cache-Control"] == "no-store"
    assert other.get("/settings").status_code == 302
    assert browser.get("/settings").status_code == 200
    assert Browser(browser.app).login(reg).status_code == 401
    reg.password = new
    assert Browser(browser.app).login(reg).status_code == 302


def test_new_key_file_replaces_the_old_one_and_still_resets_mailboxes(browser: Browser) -> None:
    reg = browser.register_and_login()
    browser.post("/settings/mailboxes", {"local_part": "erin", "domain": "ddmail.test"})
    resp = browser.post_with_keyfile(
        "/settings/keyfile",
        {},
        reg.keyfile,
        token_from="/settings",
    )
    assert resp.headers["Content-Disposition"].startswith("attachment")
    old, reg.keyfile = reg.keyfile, resp.data
    assert Browser(browser.app).login(reg).status_code == 302
    reg_old = type(reg)(reg.account, reg.username, reg.password, old)
    assert Browser(browser.app).login(reg_old).status_code == 401
    reset = browser.post_with_keyfile(
        "/settings/mailboxes/reset",
        {"mailbox": "erin@ddmail.test"},
        reg.keyfile,
        token_from="/settings/mailboxes",
    )
    assert "mailbox-password" in codes(reset.get_data(as_text=True))


def test_account_users_can_be_added_and_removed_but_not_oneself(browser: Browser) -> None:
    reg = browser.register_and_login()
    resp = browser.post_with_keyfile("/settings/users", {}, reg.keyfile)
    page = resp.get_data(as_text=True)
    found = codes(page)
    assert found["account"] == reg.account
    keyfile = browser.download_keyfile(page)
    newcomer = type(reg)(reg.account, found["username"], found["password"], keyfile.data)
    second = Browser(browser.app)
    assert second.login(newcomer).status_code == 302
    mine = second.post_with_keyfile(
        "/settings/users/remove",
        {"user": newcomer.username},
        newcomer.keyfile,
        token_from="/settings/users",
        follow_redirects=True,
    )
    assert "You cannot remove yourself" in mine.get_data(as_text=True)
    browser.post_with_keyfile(
        "/settings/users/remove",
        {"user": newcomer.username},
        reg.keyfile,
        token_from="/settings/users",
    )
    assert second.get("/settings").status_code == 302
    assert Browser(browser.app).login(newcomer).status_code == 401


def test_export_holds_the_accounts_data(browser: Browser) -> None:
    reg = browser.register_and_login()
    browser.post("/settings/mailboxes", {"local_part": "frank", "domain": "ddmail.test"})
    data = json.loads(browser.get("/settings/account/export").data)
    assert data["account"]["id"] == reg.account
    assert [u["username"] for u in data["users"]] == [reg.username]
    assert [m["address"] for m in data["mailboxes"]] == ["frank@ddmail.test"]
    assert {e["action"] for e in data["audit"]} >= {"account_registered", "login", "mailbox_added"}
    assert data["funds"] == {"balance_cents": 0, "ledger": []}
    assert reg.password not in json.dumps(data)


def test_account_deletion_shreds_every_mailbox_and_keeps_a_final_audit_entry(
    env: tuple[Services, Flask], browser: Browser
) -> None:
    reg = browser.register_and_login()
    browser.post("/settings/mailboxes", {"local_part": "gina", "domain": "ddmail.test"})
    refused = browser.post_with_keyfile(
        "/settings/account/delete",
        {},
        reg.keyfile,
    )
    assert refused.status_code == 400 and "Tick the box" in refused.get_data(as_text=True)
    resp = browser.post_with_keyfile(
        "/settings/account/delete",
        {"confirm": "y"},
        reg.keyfile,
    )
    assert "Your account is deleted" in resp.get_data(as_text=True)
    svc = env[0]
    assert db_rows(svc, "SELECT count(*) FROM keyhandler_mailbox_keys") == [(0,)]
    assert db_rows(svc, "SELECT address FROM backend_tombstones") == [("gina@ddmail.test",)]
    assert db_rows(svc, "SELECT count(*) FROM web_users") == [(0,)]
    last = db_rows(svc, "SELECT action FROM web_audit ORDER BY seq DESC LIMIT 1")
    assert last == [("account_deleted",)]
    assert Browser(browser.app).login(reg).status_code == 401


def test_totp_is_shown_once_needed_at_login_and_each_code_works_once(
    env: tuple[Services, Flask], browser: Browser
) -> None:
    from ddmail_web import totp
    from ddmail_web.keyrotation import rotate_master

    reg = browser.register_and_login()
    page = browser.get("/settings/totp")
    secret = codes(page.get_data(as_text=True))["totp-secret"]
    qr = browser.get("/settings/totp/qr.png")
    assert qr.headers["Content-Type"] == "image/png" and qr.data.startswith(b"\x89PNG")
    now = int(time.time())
    wrong_code = "000000" if totp.code_at(secret, now) != "000000" else "111111"
    wrong = browser.post_with_keyfile(
        "/settings/totp",
        {"totp": wrong_code},
        reg.keyfile,
    )
    assert "That code is not right" in wrong.get_data(as_text=True)
    browser.post_with_keyfile(
        "/settings/totp",
        {"totp": totp.code_at(secret, now)},
        reg.keyfile,
    )
    assert secret.encode() not in repr(db_rows(env[0], "SELECT * FROM web_users")).encode()
    # Rotation re-wraps the sealed secret; logins keep working with the same codes.
    _, rewrapped = rotate_master(env[0].cfg)
    assert rewrapped == 1
    assert Browser(browser.app).login(reg).status_code == 401  # no code
    later = totp.code_at(secret, now + 30)
    first = Browser(browser.app)
    with freeze_time(now + 30):
        assert first.login(reg, totp=later).status_code == 302
        assert Browser(browser.app).login(reg, totp=later).status_code == 401  # used up


def test_idle_and_old_sessions_end(env: tuple[Services, Flask], browser: Browser) -> None:
    reg = browser.register_and_login()
    assert browser.get("/settings").status_code == 200
    db_run(env[0], "UPDATE web_sessions SET last_seen = last_seen - 31 * 60")
    assert browser.get("/settings").status_code == 302
    assert db_rows(env[0], "SELECT count(*) FROM web_sessions") == [(0,)]
    browser.login(reg)
    db_run(env[0], "UPDATE web_sessions SET created_at = created_at - 13 * 3600")
    assert browser.get("/settings").status_code == 302


def test_domain_page_shows_every_expected_record_next_to_dns(
    env: tuple[Services, Flask], browser: Browser
) -> None:
    svc = env[0]
    browser.register_and_login()
    browser.post("/settings/domains", {"domain": "owned.example"})
    svc.resolver.records[("owned.example", "MX")] = ["10 mail.ddmail.test."]
    svc.resolver.records[("owned.example", "TXT")] = ["v=spf1 include:other.example mx -all"]
    svc.resolver.records[("_dmarc.owned.example", "TXT")] = ["v=DMARC1; p=reject; rua=mailto:x"]
    page = browser.get("/settings/domains").get_data(as_text=True)
    rows = re.findall(r"<tr><td>(\w[\w-]*)</td>.*?<span class=\"flash-(\w+)\">", page, re.S)
    assert dict(rows) == {
        "ownership": "error",
        "MX": "success",
        "SPF": "success",
        "DKIM": "error",
        "DMARC": "success",
        "MTA-STS": "error",
        "TLS-RPT": "error",
    }
    assert "v=DMARC1; p=reject" in page  # what DNS has now, shown as it is
    # DKIM: two CNAMEs into the provider's zone (DN 38), each shown with what DNS serves.
    assert "ddm1._domainkey.owned.example" in page and "ddm2._domainkey.owned.example" in page
    assert "ddm1.owned.example.dkim.ddmail.test." in page
    svc.resolver.records[("ddm1._domainkey.owned.example", "CNAME")] = [
        "ddm1.owned.example.dkim.ddmail.test."
    ]
    page = browser.get("/settings/domains").get_data(as_text=True)
    dkim = re.findall(
        r"<tr><td>DKIM</td><td>CNAME</td><td>(\S+)</td>.*?<span class=\"flash-(\w+)\">", page, re.S
    )
    assert dkim == [
        ("ddm1._domainkey.owned.example", "success"),
        ("ddm2._domainkey.owned.example", "error"),
    ]


def test_expired_sessions_are_not_listed_and_the_periodic_job_removes_them(
    env: tuple[Services, Flask], browser: Browser
) -> None:
    from ddmail_web import periodic
    from ddmail_web.state import panel_database

    svc = env[0]
    reg = browser.register()
    abandoned = Browser(browser.app)
    abandoned.login(reg)  # never logs out
    browser.login(reg)
    db_run(  # the abandoned browser's session idled out long ago
        svc,
        "UPDATE web_sessions SET last_seen = last_seen - 31 * 60"
        " WHERE id = (SELECT min(id) FROM web_sessions)",
    )
    db_run(
        svc,
        "INSERT INTO web_counters (key, window_start, count) VALUES ('old', 1, 3), ('new', :n, 1)",
        n=int(time.time()),
    )
    page = browser.get("/settings/sessions").get_data(as_text=True)
    assert len(re.findall(r'name="session" value="(\d+)"', page)) == 1
    removed = periodic.purge_expired(panel_database(svc.cfg), svc.cfg.web)
    assert removed == 2  # the idle session and the stale counter
    assert db_rows(svc, "SELECT count(*) FROM web_sessions") == [(1,)]
    assert db_rows(svc, "SELECT key FROM web_counters WHERE key IN ('old', 'new')") == [("new",)]
    assert browser.get("/settings").status_code == 200
    assert abandoned.get("/settings").status_code == 302


def test_audit_page_shows_the_head_of_the_chain_to_keep(
    env: tuple[Services, Flask], browser: Browser
) -> None:
    browser.register_and_login()
    page = browser.get("/settings/audit").get_data(as_text=True)
    head = re.search(r"The newest entry is #(\d+), hash <code id=\"audit-head\">(\w+)</code>", page)
    assert head is not None
    # The only account of this test's database.
    newest = db_rows(env[0], "SELECT seq, hash FROM web_audit ORDER BY seq DESC LIMIT 1")[0]
    assert (int(head.group(1)), head.group(2)) == (newest[0], str(newest[1])[:16])


def test_removing_a_mailbox_named_with_a_stray_newline_records_the_canonical_address(
    env: tuple[Services, Flask], browser: Browser
) -> None:
    """Found by the fuzz test: the backend accepted the address once normalised, and the panel
    then wrote the raw form value into the audit trail, which refused it (a 500 after the
    mailbox was already gone)."""
    reg = browser.register_and_login()
    browser.post("/settings/mailboxes", {"local_part": "alice", "domain": "ddmail.test"})
    resp = browser.post_with_keyfile(
        "/settings/mailboxes/remove",
        {"mailbox": "alice@ddmail.test\n", "confirm": "y"},
        reg.keyfile,
        token_from="/settings/mailboxes",
        follow_redirects=True,
    )
    assert resp.status_code == 200
    assert "alice@ddmail.test is destroyed" in resp.get_data(as_text=True)
    removed = db_rows(env[0], "SELECT object FROM web_audit WHERE action = 'mailbox_removed'")
    assert removed == [("alice@ddmail.test",)]

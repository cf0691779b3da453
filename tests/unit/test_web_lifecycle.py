"""An account's irreversible actions and its end, through the panel with the real backend and
keyhandler behind it: the key file guards every action that cannot be undone (checked over the
whole route map, by declaration and by behaviour), an unfunded account can still leave, and a
deleted account leaves one audit entry and nothing else."""

from __future__ import annotations

import json
import re

import pytest
from flask import Flask
from sqlalchemy import create_engine, inspect, text

from ddmail_web import audit
from ddmail_web.reauth import KEYFILE_NEEDED
from ddmail_web.state import panel_database
from tests.services import Services, db_rows, db_run
from tests.webclient import Browser, Registered, codes, csrf, keyfile_upload

pytestmark = pytest.mark.postgres

# A POST route whose path or endpoint says it takes something away must be declared
# "reauthenticated" (key file required), unless it is listed here with why it can be undone.
DESTRUCTIVE = re.compile(r"remove|delete|destroy|purge|revoke|shred|erase|wipe", re.IGNORECASE)
REVERSIBLE = {
    "/settings/sessions/revoke": "ends a login session; its user can log in again",
    "/settings/openpgp/remove": "a public key; the owner can upload it again",
}
WRONG_KEYFILE = b"key: " + b"Q" * 88


def _snapshot(svc: Services) -> dict[str, list[str]]:
    """Every row of every table (a session's last_seen aside, which a page view may touch)."""
    engine = create_engine(svc.cfg.db_url)
    found: dict[str, list[str]] = {}
    try:
        with engine.connect() as conn:
            for table in inspect(conn).get_table_names():
                rows = conn.execute(text(f'SELECT * FROM "{table}"')).mappings()
                found[table] = sorted(
                    repr(sorted((k, v) for k, v in row.items() if k != "last_seen")) for row in rows
                )
    finally:
        engine.dispose()
    return found


def _logged_in(app: Flask) -> tuple[Browser, Registered]:
    browser = Browser(app)
    return browser, browser.register_and_login()


def _mailbox_alias_and_domain(browser: Browser, local: str, alias: str, domain: str) -> None:
    """A mailbox LOCAL@ddmail.test, an alias ALIAS@ddmail.test to it, a claim on DOMAIN: an
    object for each removal form."""
    browser.post("/settings/mailboxes", {"local_part": local, "domain": "ddmail.test"})
    browser.post(
        "/settings/aliases",
        {"local_part": alias, "domain": "ddmail.test", "destination": [f"{local}@ddmail.test"]},
    )
    browser.post("/settings/domains", {"domain": domain})


def _second_user(browser: Browser, reg: Registered) -> str:
    page = browser.post_with_keyfile("/settings/users", {}, reg.keyfile).get_data(as_text=True)
    browser.download_keyfile(page)
    return codes(page)["username"]


def test_every_destructive_route_is_declared_to_need_the_key_file(
    env: tuple[Services, Flask],
) -> None:
    app = env[1]
    posts = [r for r in app.url_map.iter_rules() if "POST" in (r.methods or set())]
    assert set(REVERSIBLE) <= {r.rule for r in posts}, "REVERSIBLE names a route that is gone"
    destructive = [r for r in posts if DESTRUCTIVE.search(r.rule + " " + r.endpoint)]
    assert len(destructive) >= 6  # the pattern still finds what it is meant to find
    for rule in destructive:
        if rule.rule in REVERSIBLE:
            continue
        access = getattr(app.view_functions[rule.endpoint], "_ddmail_access", None)
        assert access == "reauthenticated", f"{rule.rule} cannot be undone: require the key file"


def test_every_reauthenticated_post_without_the_right_key_file_changes_nothing(
    env: tuple[Services, Flask],
) -> None:
    """By behaviour, not declaration: each such route gets a complete, otherwise valid form for
    real objects of the account, once without a key file and once with another one; the answer
    says why, and not one row of the database changes."""
    svc, app = env
    browser, reg = _logged_in(app)
    _mailbox_alias_and_domain(browser, "alice", "team", "example.org")
    other = _second_user(browser, reg)
    form = {
        "mailbox": "alice@ddmail.test",
        "alias": "team@ddmail.test",
        "domain": "example.org",
        "user": other,
        "confirm": "y",
        "current_password": "x",
    }
    routes = [
        rule.rule
        for rule in app.url_map.iter_rules()
        if "POST" in (rule.methods or set())
        and getattr(app.view_functions[rule.endpoint], "_ddmail_access", None) == "reauthenticated"
    ]
    assert {
        "/settings/mailboxes/remove",
        "/settings/users/remove",
        "/settings/domains/remove",
        "/settings/aliases/remove",
        "/settings/account/delete",
    } <= set(routes)
    before = _snapshot(svc)
    token = csrf(browser.get("/settings/mailboxes").get_data(as_text=True))
    for path in routes:
        for key in ({}, {"key": keyfile_upload(WRONG_KEYFILE)}):
            resp = browser.client.post(
                path,
                data={"csrf_token": token, **form, **key},
                content_type="multipart/form-data",
                base_url="https://localhost",
            )
            assert resp.status_code == 403, (path, key)
            assert KEYFILE_NEEDED in resp.get_data(as_text=True), path
            assert _snapshot(svc) == before, path
    assert browser.get("/settings").status_code == 200  # still logged in, nothing ended


def test_domain_and_alias_removal_work_with_the_key_file(env: tuple[Services, Flask]) -> None:
    svc, app = env
    browser, reg = _logged_in(app)
    _mailbox_alias_and_domain(browser, "bo", "crew", "example.net")
    alias = browser.post_with_keyfile(
        "/settings/aliases/remove",
        {"alias": "crew@ddmail.test"},
        reg.keyfile,
        token_from="/settings/aliases",
        follow_redirects=True,
    )
    assert "crew@ddmail.test is removed." in alias.get_data(as_text=True)
    domain = browser.post_with_keyfile(
        "/settings/domains/remove",
        {"domain": "example.net"},
        reg.keyfile,
        token_from="/settings/domains",
        follow_redirects=True,
    )
    assert "example.net is removed." in domain.get_data(as_text=True)
    assert db_rows(svc, "SELECT count(*) FROM backend_aliases") == [(0,)]
    assert db_rows(svc, "SELECT count(*) FROM backend_domains WHERE name = 'example.net'") == [(0,)]


def test_the_removal_forms_carry_a_key_file_field(env: tuple[Services, Flask]) -> None:
    _, app = env
    browser, reg = _logged_in(app)
    _mailbox_alias_and_domain(browser, "cy", "cyx", "example.com")
    _second_user(browser, reg)
    for page, action in (
        ("/settings/mailboxes", "/settings/mailboxes/remove"),
        ("/settings/aliases", "/settings/aliases/remove"),
        ("/settings/domains", "/settings/domains/remove"),
        ("/settings/users", "/settings/users/remove"),
    ):
        html = browser.get(page).get_data(as_text=True)
        start = html.index(f'action="{action}"')
        form = html[html.rindex("<form", 0, start) : html.index("</form>", start)]
        assert 'enctype="multipart/form-data"' in form, page
        assert 'type="file" name="key"' in form, page


def _disable(svc: Services, account: str) -> None:
    db_run(svc, "UPDATE web_accounts SET enabled = FALSE WHERE id = :a", a=account)


def test_an_unfunded_account_can_export_manage_sessions_and_delete_itself(
    env: tuple[Services, Flask],
) -> None:
    svc, app = env
    browser, reg = _logged_in(app)
    other = Browser(app)
    assert other.login(reg).status_code == 302
    _disable(svc, reg.account)
    svc.web.call("POST", "/v1/accounts/state", {"account": reg.account, "enabled": False})
    assert browser.get("/settings/mailboxes").headers["Location"].endswith("/settings/funds")
    funds = browser.get("/settings/funds").get_data(as_text=True)
    for link in ("/settings/account/export", "/settings/sessions", "/settings/account/delete"):
        assert f'href="{link}"' in funds
    exported = browser.get("/settings/account/export")
    assert exported.status_code == 200
    assert json.loads(exported.data)["account"] == {
        "id": reg.account,
        "created_at": json.loads(exported.data)["account"]["created_at"],
        "enabled": False,
        "payment_reference": json.loads(exported.data)["account"]["payment_reference"],
    }
    sessions = browser.get("/settings/sessions")
    assert sessions.status_code == 200
    ids = re.findall(r'name="session" value="(\d+)"', sessions.get_data(as_text=True))
    assert len(ids) == 2
    ended = browser.post(
        "/settings/sessions/revoke", {"session": ids[0]}, token_from="/settings/sessions"
    )
    assert ended.headers["Location"].endswith("/settings/sessions")
    assert other.get("/settings/funds").status_code == 302  # that session is gone
    assert browser.get("/settings/account/delete").status_code == 200
    deleted = browser.post_with_keyfile(
        "/settings/account/delete",
        {"confirm": "y"},
        reg.keyfile,
    )
    assert "Your account is deleted" in deleted.get_data(as_text=True)
    assert db_rows(svc, "SELECT count(*) FROM web_accounts") == [(0,)]
    assert db_rows(svc, "SELECT count(*) FROM backend_accounts") == [(0,)]


def test_an_unfunded_account_can_log_out(env: tuple[Services, Flask]) -> None:
    svc, app = env
    browser, reg = _logged_in(app)
    _disable(svc, reg.account)
    browser.post("/logout", token_from="/settings/funds")
    assert browser.get("/settings/funds").status_code == 302
    assert db_rows(svc, "SELECT count(*) FROM web_sessions") == [(0,)]


def test_account_deletion_leaves_exactly_one_audit_entry_and_no_keys(
    env: tuple[Services, Flask],
) -> None:
    svc, app = env
    browser, reg = _logged_in(app)
    keep, kept = _logged_in(app)  # another account, whose trail must stay whole
    browser.post("/settings/mailboxes", {"local_part": "dora", "domain": "ddmail.test"})
    svc.web.call(
        "POST", "/v1/accounts/state", {"account": reg.account, "enabled": True}
    )  # a backend state row exists, as for every account that was ever disabled
    assert len(db_rows(svc, "SELECT id FROM web_audit WHERE account = :a", a=reg.account)) >= 3
    kept_before = db_rows(svc, "SELECT seq, hash FROM web_audit WHERE account = :a", a=kept.account)
    deleted = browser.post_with_keyfile(
        "/settings/account/delete",
        {"confirm": "y"},
        reg.keyfile,
    )
    assert "Your account is deleted" in deleted.get_data(as_text=True)
    trail = "SELECT seq, actor, action, object FROM web_audit WHERE account = :a"
    assert db_rows(svc, trail, a=reg.account) == [(1, reg.username, "account_deleted", "")]
    for query in (
        "SELECT count(*) FROM keyhandler_recovery_keys WHERE account = :a",
        "SELECT count(*) FROM keyhandler_mailbox_keys WHERE account = :a",
        "SELECT count(*) FROM keyhandler_openpgp_keys WHERE account = :a",
        "SELECT count(*) FROM backend_accounts WHERE account = :a",
    ):
        assert db_rows(svc, query, a=reg.account) == [(0,)], query
    assert db_rows(svc, "SELECT count(*) FROM keyhandler_recovery_keys") == [(1,)]  # the other's
    db = panel_database(svc.cfg)
    with db.session() as s:
        assert audit.verify(s, reg.account) is None
    db.engine.dispose()
    assert (
        db_rows(svc, "SELECT seq, hash FROM web_audit WHERE account = :a", a=kept.account)
        == kept_before
    )
    assert keep.get("/settings").status_code == 200

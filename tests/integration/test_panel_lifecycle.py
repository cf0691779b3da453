"""Irreversible actions and account deletion through the real panel: nginx (HTTPS), gunicorn,
the backend and the keyhandler of `ddmail stack up`, and their database."""

from __future__ import annotations

import subprocess
from typing import Any

from sqlalchemy import create_engine, text

from ddmail_web.reauth import KEYFILE_NEEDED
from tests.httpsbrowser import HttpsBrowser
from tests.stackrun import VENV_BIN, RunningStack
from tests.webclient import Registered, codes


def _rows(stack: RunningStack, query: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_engine(stack.info["db_url"])
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(query), params)]
    finally:
        engine.dispose()


def _logged_in(stack: RunningStack) -> tuple[HttpsBrowser, Registered]:
    browser = HttpsBrowser(stack.info["web_url"], stack.tls())
    reg = browser.register()
    assert browser.login(reg).status == 302
    return browser, reg


def _add_mailbox(stack: RunningStack, browser: HttpsBrowser, local: str) -> str:
    address = f"{local}@{stack.info['global_domain']}"
    made = browser.post(
        "/settings/mailboxes", {"local_part": local, "domain": stack.info["global_domain"]}
    )
    assert "mailbox-password" in codes(made.text), made.text
    return address


def test_mailbox_removal_needs_the_key_file_through_the_real_panel(stack: RunningStack) -> None:
    browser, reg = _logged_in(stack)
    address = _add_mailbox(stack, browser, "shredme")
    mailbox = "SELECT state FROM backend_mailboxes WHERE address = :a"
    key_rows = "SELECT count(*) FROM keyhandler_mailbox_keys WHERE address = :a"
    for key in ({}, {"key": (b"key: " + b"Z" * 88, "other.key")}):
        refused = browser.post(
            "/settings/mailboxes/remove",
            {"mailbox": address, "confirm": "y", **key},
            token_from="/settings/mailboxes",
            multipart=True,
        )
        assert refused.status == 403 and KEYFILE_NEEDED in refused.text
        assert _rows(stack, mailbox, a=address) == [("active",)]
        assert _rows(stack, key_rows, a=address) == [(1,)]
    removed = browser.post(
        "/settings/mailboxes/remove",
        {"mailbox": address, "confirm": "y", "key": (reg.keyfile, "my.key")},
        token_from="/settings/mailboxes",
    )
    assert removed.status == 302
    assert _rows(stack, mailbox, a=address) == []
    assert _rows(stack, key_rows, a=address) == [(0,)]
    assert "can never be read again" in browser.get("/settings/mailboxes").text


def test_deleted_account_leaves_one_audit_entry_and_no_recovery_key(stack: RunningStack) -> None:
    browser, reg = _logged_in(stack)
    _add_mailbox(stack, browser, "leaving")
    audit = "SELECT seq, action, prev_hash FROM web_audit WHERE account = :a"
    assert len(_rows(stack, audit, a=reg.account)) >= 3  # registered, login, mailbox added
    assert _rows(
        stack, "SELECT count(*) FROM keyhandler_recovery_keys WHERE account = :a", a=reg.account
    ) == [(1,)]
    deleted = browser.post(
        "/settings/account/delete", {"confirm": "y", "key": (reg.keyfile, "my.key")}
    )
    assert deleted.status == 200 and "Your account is deleted" in deleted.text
    assert _rows(stack, audit, a=reg.account) == [(1, "account_deleted", "0" * 64)]
    verified = subprocess.run(
        [
            str(VENV_BIN / "ddmail"),
            "admin",
            "audit",
            "verify",
            reg.account,
            "--root",
            str(stack.root),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stderr
    for query in (
        "SELECT count(*) FROM keyhandler_recovery_keys WHERE account = :a",
        "SELECT count(*) FROM keyhandler_openpgp_keys WHERE account = :a",
        "SELECT count(*) FROM backend_accounts WHERE account = :a",
    ):
        assert _rows(stack, query, a=reg.account) == [(0,)], query

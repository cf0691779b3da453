"""The backend's API with the real keyhandler behind it (in-process, SQLite): the rules of
docs/architecture.md §4-§6 as a caller sees them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ddmail_backend.jobs import JobQueue
from ddmail_backend.mailboxes import Mailboxes
from ddmail_common.client import ServiceClient
from ddmail_common.db import Database
from ddmail_common.errors import ApiError
from ddmail_common.signing import sign
from ddmail_keyhandler.app import create_app as keyhandler_app
from tests.services import Services, restart_keyhandler, running_services
from tests.stackrun import postgres_url

# Also run against PostgreSQL in the second pass of ./dev test.
pytestmark = pytest.mark.postgres

ACCOUNT = "acct-1"
RECOVERY = "recovery-secret-of-acct-1-" + "x" * 20


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Services]:
    with running_services(tmp_path, postgres_url()) as services:
        services.web.call(
            "POST", "/v1/accounts/recovery-key", {"account": ACCOUNT, "secret": RECOVERY}
        )
        yield services


def rows(svc: Services, query: str) -> list[tuple[object, ...]]:
    engine = create_engine(svc.cfg.db_url)
    with engine.connect() as conn:
        result = list(conn.execute(text(query)))
    engine.dispose()
    return result


def unlock(svc: Services, user: str, password: str) -> int:
    client = keyhandler_app(svc.cfg).test_client()
    resp = client.post(
        "/v1/unlock",
        json={"user": user, "password": password},
        headers={"Authorization": "Bearer " + svc.cfg.secret("dovecot").decode()},
    )
    return resp.status_code


def add(svc: Services, address: str, account: str = ACCOUNT) -> dict[str, object]:
    return svc.web.call("POST", "/v1/mailboxes", {"account": account, "address": address})


def error_of(call: object) -> ApiError:
    assert isinstance(call, ApiError)
    return call


def test_new_mailbox_gets_a_password_that_unlocks_its_key(svc: Services) -> None:
    made = add(svc, "Alice@DDMail.test")
    assert made["address"] == "alice@ddmail.test"
    assert unlock(svc, "alice@ddmail.test", str(made["password"])) == 200
    assert unlock(svc, "alice@ddmail.test", "wrong") == 401
    assert rows(svc, "SELECT address FROM mail_mailboxes") == [("alice@ddmail.test",)]


def test_unlock_requires_the_dovecot_token(svc: Services) -> None:
    made = add(svc, "alice@ddmail.test")
    client = keyhandler_app(svc.cfg).test_client()
    resp = client.post(
        "/v1/unlock",
        json={"user": "alice@ddmail.test", "password": made["password"]},
        headers={"Authorization": "Bearer nope"},
    )
    assert resp.status_code == 401


def test_unknown_user_unlock_is_404(svc: Services) -> None:
    assert unlock(svc, "nobody@ddmail.test", "x") == 404


@pytest.mark.parametrize(
    "local",
    ["postmaster", "abuse", "Admin", "post.master", "root", "mailer-daemon", "noreply", "security"],
)
def test_reserved_names_are_refused_on_global_domains(svc: Services, local: str) -> None:
    with pytest.raises(ApiError) as exc:
        add(svc, f"{local}@ddmail.test")
    assert exc.value.status in (400, 422)
    assert rows(svc, "SELECT count(*) FROM backend_mailboxes") == [(0,)]


def test_invalid_address_is_a_clear_400(svc: Services) -> None:
    for bad in [
        "no-at-sign",
        "a@",
        "@ddmail.test",
        "a b@ddmail.test",
        "a\n@ddmail.test",
        "x" * 65 + "@ddmail.test",
    ]:
        with pytest.raises(ApiError) as exc:
            add(svc, bad)
        assert exc.value.status == 400, bad
        assert exc.value.message


def test_unknown_domain_is_refused(svc: Services) -> None:
    with pytest.raises(ApiError) as exc:
        add(svc, "alice@elsewhere.example")
    assert exc.value.status == 422


def test_duplicate_address_is_a_conflict(svc: Services) -> None:
    add(svc, "alice@ddmail.test")
    with pytest.raises(ApiError) as exc:
        add(svc, "ALICE@ddmail.test")
    assert exc.value.status == 409


def test_keyhandler_down_leaves_no_half_made_mailbox(svc: Services) -> None:
    svc.stop_keyhandler()
    with pytest.raises(ApiError) as exc:
        add(svc, "alice@ddmail.test")
    assert exc.value.status == 503
    assert "key" in exc.value.message
    assert rows(svc, "SELECT count(*) FROM backend_mailboxes") == [(0,)]
    assert rows(svc, "SELECT count(*) FROM keyhandler_mailbox_keys") == [(0,)]


def test_password_change_replaces_the_old_password(svc: Services) -> None:
    made = add(svc, "alice@ddmail.test")
    new = svc.web.call(
        "POST",
        "/v1/mailboxes/password",
        {"account": ACCOUNT, "address": "alice@ddmail.test", "current_password": made["password"]},
    )
    assert unlock(svc, "alice@ddmail.test", str(made["password"])) == 401
    assert unlock(svc, "alice@ddmail.test", str(new["password"])) == 200


def test_password_change_needs_the_current_password(svc: Services) -> None:
    add(svc, "alice@ddmail.test")
    with pytest.raises(ApiError) as exc:
        svc.web.call(
            "POST",
            "/v1/mailboxes/password",
            {"account": ACCOUNT, "address": "alice@ddmail.test", "current_password": "guess"},
        )
    assert exc.value.status == 401


def test_reset_with_the_recovery_secret(svc: Services) -> None:
    made = add(svc, "alice@ddmail.test")
    with pytest.raises(ApiError) as exc:
        svc.web.call(
            "POST",
            "/v1/mailboxes/reset",
            {"account": ACCOUNT, "address": "alice@ddmail.test", "recovery_secret": "wrong"},
        )
    assert exc.value.status == 401
    new = svc.web.call(
        "POST",
        "/v1/mailboxes/reset",
        {"account": ACCOUNT, "address": "alice@ddmail.test", "recovery_secret": RECOVERY},
    )
    assert unlock(svc, "alice@ddmail.test", str(new["password"])) == 200
    assert unlock(svc, "alice@ddmail.test", str(made["password"])) == 401


def test_another_account_cannot_touch_the_mailbox(svc: Services) -> None:
    made = add(svc, "alice@ddmail.test")
    with pytest.raises(ApiError) as exc:
        svc.web.call(
            "POST",
            "/v1/mailboxes/password",
            {
                "account": "acct-2",
                "address": "alice@ddmail.test",
                "current_password": made["password"],
            },
        )
    assert exc.value.status == 404


def test_removed_mailbox_is_shredded_and_tombstoned(svc: Services) -> None:
    made = add(svc, "alice@ddmail.test")
    maildir = svc.cfg.mail_root / "ddmail.test" / "alice"
    (maildir / "Maildir" / "cur").mkdir(parents=True)
    (maildir / "Maildir" / "cur" / "1.msg").write_bytes(b"CRYPTED")
    answer = svc.web.call(
        "POST", "/v1/mailboxes/remove", {"account": ACCOUNT, "address": "alice@ddmail.test"}
    )
    assert answer["state"] == "removed"
    assert not maildir.exists()
    assert unlock(svc, "alice@ddmail.test", str(made["password"])) == 404
    assert rows(svc, "SELECT count(*) FROM keyhandler_mailbox_keys") == [(0,)]
    with pytest.raises(ApiError) as exc:
        add(svc, "alice@ddmail.test", account="acct-2")
    assert exc.value.status == 409


def test_removal_with_keyhandler_down_is_finished_later(svc: Services) -> None:
    add(svc, "alice@ddmail.test")
    svc.stop_keyhandler()
    answer = svc.web.call(
        "POST", "/v1/mailboxes/remove", {"account": ACCOUNT, "address": "alice@ddmail.test"}
    )
    assert answer["state"] == "deleting"
    # Already invisible to Postfix and Dovecot, though the key is not destroyed yet.
    assert rows(svc, "SELECT count(*) FROM mail_mailboxes") == [(0,)]
    assert rows(svc, "SELECT count(*) FROM backend_jobs WHERE NOT done") == [(1,)]


def test_alias_with_two_destinations(svc: Services) -> None:
    add(svc, "alice@ddmail.test")
    add(svc, "bob@ddmail.test")
    svc.web.call(
        "POST",
        "/v1/aliases",
        {
            "account": ACCOUNT,
            "address": "team@ddmail.test",
            "destinations": ["alice@ddmail.test", "bob@ddmail.test"],
        },
    )
    assert sorted(rows(svc, "SELECT destination FROM mail_aliases")) == [
        ("alice@ddmail.test",),
        ("bob@ddmail.test",),
    ]
    senders = rows(svc, "SELECT login FROM mail_senders WHERE sender = 'team@ddmail.test'")
    assert sorted(senders) == [("alice@ddmail.test",), ("bob@ddmail.test",)]


def test_alias_to_a_foreign_mailbox_is_refused(svc: Services) -> None:
    svc.web.call("POST", "/v1/accounts/recovery-key", {"account": "acct-2", "secret": RECOVERY})
    add(svc, "carol@ddmail.test", account="acct-2")
    with pytest.raises(ApiError) as exc:
        svc.web.call(
            "POST",
            "/v1/aliases",
            {"account": ACCOUNT, "address": "x@ddmail.test", "destinations": ["carol@ddmail.test"]},
        )
    assert exc.value.status == 422
    assert rows(svc, "SELECT count(*) FROM backend_aliases") == [(0,)]


def test_account_domain_needs_its_dns_token(svc: Services) -> None:
    made = svc.web.call("POST", "/v1/domains", {"account": ACCOUNT, "name": "Bücher.Example"})
    assert made["name"] == "xn--bcher-kva.example" and made["verified"] is False
    with pytest.raises(ApiError) as exc:
        add(svc, "me@xn--bcher-kva.example")
    assert exc.value.status == 422
    name = "_ddmail-verify.xn--bcher-kva.example"
    svc.resolver.records[(name, "TXT")] = ["v=spf1 -all", f"ddmail-verify={made['token']}"]
    assert (
        svc.web.call("POST", "/v1/domains/verify", {"account": ACCOUNT, "name": "bücher.example"})[
            "verified"
        ]
        is True
    )
    assert add(svc, "me@bücher.example")["address"] == "me@xn--bcher-kva.example"


def test_tokens_are_unlinkable_across_domains(svc: Services) -> None:
    a = svc.web.call("POST", "/v1/domains", {"account": ACCOUNT, "name": "a.example"})
    b = svc.web.call("POST", "/v1/domains", {"account": ACCOUNT, "name": "b.example"})
    assert a["token"] != b["token"] and len(str(a["token"])) >= 32


def test_domain_in_use_cannot_be_removed(svc: Services) -> None:
    made = svc.web.call("POST", "/v1/domains", {"account": ACCOUNT, "name": "c.example"})
    svc.resolver.records[("_ddmail-verify.c.example", "TXT")] = [f"ddmail-verify={made['token']}"]
    svc.web.call("POST", "/v1/domains/verify", {"account": ACCOUNT, "name": "c.example"})
    add(svc, "me@c.example")
    with pytest.raises(ApiError) as exc:
        svc.web.call("POST", "/v1/domains/remove", {"account": ACCOUNT, "name": "c.example"})
    assert exc.value.status == 422


def test_idempotency_key_replays_the_first_answer(svc: Services) -> None:
    body = {"account": ACCOUNT, "address": "alice@ddmail.test"}
    first = svc.web.call("POST", "/v1/mailboxes", body, idempotency_key="retry-key-0001")
    again = svc.web.call("POST", "/v1/mailboxes", body, idempotency_key="retry-key-0001")
    assert first == again
    assert rows(svc, "SELECT count(*) FROM backend_mailboxes") == [(1,)]
    sealed = rows(svc, "SELECT sealed FROM backend_idempotency")
    assert all(str(first["password"]).encode() not in bytes(s[0]) for s in sealed)  # type: ignore[arg-type]


def test_web_may_not_manage_global_domains(svc: Services) -> None:
    with pytest.raises(ApiError) as exc:
        svc.web.call("POST", "/v1/domains/global", {"name": "other.test"})
    assert exc.value.status == 403


def _raw(
    svc: Services, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, object]]:
    import http.client
    import socket

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(str(svc.cfg.backend_socket))

    conn = Conn("localhost")
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read() or b"{}")


def test_unsigned_and_malformed_requests_get_json_errors(svc: Services) -> None:
    status, body = _raw(svc, "POST", "/v1/mailboxes", b"{}", {})
    assert status == 401 and body["error"] == "bad_signature"
    payload = b"{not json"
    status, body = _raw(
        svc,
        "POST",
        "/v1/mailboxes",
        payload,
        sign("web", svc.cfg.secret("web"), "POST", "/v1/mailboxes", payload),
    )
    assert status == 400 and body["error"] == "malformed_json"
    big = b'{"a": "' + b"x" * 300_000 + b'"}'
    status, body = _raw(
        svc,
        "POST",
        "/v1/mailboxes",
        big,
        sign("web", svc.cfg.secret("web"), "POST", "/v1/mailboxes", big),
    )
    assert status == 413


def test_missing_field_is_named(svc: Services) -> None:
    with pytest.raises(ApiError) as exc:
        svc.web.call("POST", "/v1/mailboxes", {"account": ACCOUNT})
    assert exc.value.status == 400 and "address" in exc.value.message


def test_client_reports_an_unreachable_service_as_503(tmp_path: Path) -> None:
    client = ServiceClient("web", b"k" * 32, tmp_path / "none.sock", "backend")
    with pytest.raises(ApiError) as exc:
        client.call("GET", "/v1/mailboxes?account=a")
    assert exc.value.status == 503


def test_interrupted_removal_finishes_when_the_keyhandler_returns(svc: Services) -> None:
    made = add(svc, "alice@ddmail.test")
    svc.stop_keyhandler()
    answer = svc.web.call(
        "POST", "/v1/mailboxes/remove", {"account": ACCOUNT, "address": made["address"]}
    )
    assert answer["state"] == "deleting"
    restart_keyhandler(svc)
    db = Database(svc.cfg.db_url)
    queue = JobQueue(db)
    keyhandler = ServiceClient(
        "backend", svc.cfg.secret("backend"), svc.cfg.keyhandler_socket, "key"
    )
    Mailboxes(db, keyhandler, queue, svc.cfg.mail_root)  # registers the removal job's handler
    with db.session() as s:
        s.execute(text("UPDATE backend_jobs SET next_run_at = 0"))  # skip the back-off
    assert queue.run_due() == 0
    assert rows(svc, "SELECT count(*) FROM backend_mailboxes") == [(0,)]
    assert rows(svc, "SELECT count(*) FROM keyhandler_mailbox_keys") == [(0,)]
    assert rows(svc, "SELECT address FROM backend_tombstones") == [("alice@ddmail.test",)]


def test_domain_records_of_every_domain_come_within_the_dns_budget(svc: Services) -> None:
    """A slow DNS server must not hold the page: what has not answered by then is 'no answer'."""
    from ddmail_backend.domains import Domains

    for name in ("a.example", "b.example"):
        svc.web.call("POST", "/v1/domains", {"account": ACCOUNT, "name": name})
    svc.resolver.records[("a.example", "MX")] = ["10 mail.ddmail.test."]
    svc.resolver.records[("b.example", "MX")] = ["10 mail.ddmail.test."]
    svc.resolver.slow[("b.example", "MX")] = 3.0
    domains = Domains(Database(svc.cfg.db_url), svc.resolver)
    started = time.monotonic()
    found = domains.records(
        ACCOUNT, "mail.ddmail.test", "ddmail.test", "0", "panel.ddmail.test", budget=0.5
    )
    assert time.monotonic() - started < 2.0
    assert set(found) == {"a.example", "b.example"}
    mx = {name: next(r for r in rows if r["type"] == "MX") for name, rows in found.items()}
    assert mx["a.example"]["now"] == ["10 mail.ddmail.test."] and mx["a.example"]["ok"]
    assert mx["b.example"]["now"] is None and not mx["b.example"]["ok"]
    svc.resolver.slow.clear()
    answer = svc.web.call("GET", f"/v1/domains/records?account={ACCOUNT}")  # keyed by domain
    assert set(answer["domains"]) == {"a.example", "b.example"}


def test_forgetting_an_account_waits_for_its_mailboxes_then_removes_its_recovery_key(
    svc: Services,
) -> None:
    add(svc, "alice@ddmail.test")
    svc.web.call("POST", "/v1/accounts/state", {"account": ACCOUNT, "enabled": False})
    with pytest.raises(ApiError) as exc:
        svc.web.call("POST", "/v1/accounts/remove", {"account": ACCOUNT})
    assert exc.value.code == "account_in_use"
    assert rows(svc, "SELECT count(*) FROM keyhandler_recovery_keys") == [(1,)]
    svc.web.call(
        "POST", "/v1/mailboxes/remove", {"account": ACCOUNT, "address": "alice@ddmail.test"}
    )
    for _ in range(2):  # idempotent: a retry after a failure finishes the job
        answer = svc.web.call("POST", "/v1/accounts/remove", {"account": ACCOUNT})
        assert answer == {"account": ACCOUNT, "removed": True}
    assert rows(svc, "SELECT count(*) FROM keyhandler_recovery_keys") == [(0,)]
    assert rows(svc, "SELECT count(*) FROM backend_accounts") == [(0,)]


def test_the_keyhandler_keeps_a_recovery_key_while_the_accounts_mailbox_keys_exist(
    svc: Services,
) -> None:
    add(svc, "alice@ddmail.test")
    as_backend = ServiceClient(
        "backend", svc.cfg.secret("backend"), svc.cfg.keyhandler_socket, "key"
    )
    with pytest.raises(ApiError) as exc:
        as_backend.call("POST", "/v1/recovery-keys/remove", {"account": ACCOUNT})
    assert exc.value.status == 422 and exc.value.code == "account_has_mailboxes"
    assert rows(svc, "SELECT count(*) FROM keyhandler_recovery_keys") == [(1,)]


def test_the_configured_global_domain_exists_from_the_backends_start(svc: Services) -> None:
    """A fresh deployment takes mail for its global domain without an operator step."""
    listed = svc.admin.call("GET", "/v1/domains/global")["domains"]
    assert [(d["name"], d["enabled"]) for d in listed] == [(svc.cfg.web.global_domain, True)]

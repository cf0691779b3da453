"""`ddmail admin db migrate`: the schema, then owners and grants on the real PostgreSQL, probed
with SET ROLE as each process's role (DN 33)."""

from __future__ import annotations

import os
import pwd
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import ProgrammingError

from ddmail_admin import dbadmin
from ddmail_common.migrate import MAIL_VIEWS
from tests.stackrun import postgres_url

pytestmark = pytest.mark.postgres


def test_a_relation_without_an_owner_rule_is_refused() -> None:
    with pytest.raises(dbadmin.GrantError, match="stray_table"):
        dbadmin.plan([dbadmin.Relation("stray_table", "table")])


def test_sqlite_is_upgraded_without_roles(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    assert "SQLite" in dbadmin.migrate(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM mail_senders")).scalar_one() == 0
    engine.dispose()


def drop(url: str, prefix: str) -> None:
    with psycopg.connect(
        "host=127.0.0.1 user=ddmail_test password=ddmail_test dbname=postgres", autocommit=True
    ) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {make_url(url).database} WITH (FORCE)")
        for role in dbadmin.role_names(prefix):
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture
def migrated() -> Iterator[tuple[str, str]]:
    url = postgres_url()
    if url is None:
        pytest.skip("needs DDMAIL_TEST_DB=postgresql")
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    try:
        dbadmin.migrate(url, prefix)
        dbadmin.migrate(url, prefix)  # idempotent: a second run changes nothing and succeeds
        yield url, prefix
    finally:
        drop(url, prefix)


def allowed(url: str, role: str, statement: str) -> bool:
    """Whether ROLE (alone, through SET ROLE) may run STATEMENT; nothing it does is kept."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text(f'SET ROLE "{role}"'))
            try:
                conn.execute(text(statement))
            except ProgrammingError as exc:
                assert isinstance(exc.orig, psycopg.errors.InsufficientPrivilege), exc
                return False
            finally:
                conn.rollback()
        return True
    finally:
        engine.dispose()


def owner(url: str, relation: str) -> str:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = :r"),
            {"r": relation},
        ).scalar_one()
    engine.dispose()
    return str(found)


def test_owners_follow_the_table_prefixes(migrated: tuple[str, str]) -> None:
    url, p = migrated
    assert owner(url, "web_users") == p + "ddmail-web"
    assert owner(url, "web_users_id_seq") == p + "ddmail-web"
    assert owner(url, "backend_mailboxes") == p + "ddmail-backend"
    assert owner(url, "keyhandler_mailbox_keys") == p + "ddmail-keyhandler"
    for view in MAIL_VIEWS:
        assert owner(url, view) == p + "ddmail-backend"


def test_every_role_logs_in_and_none_has_a_password(migrated: tuple[str, str]) -> None:
    url, p = migrated
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT rolname, rolcanlogin FROM pg_roles WHERE starts_with(rolname, :p)"),
            {"p": p},
        ).all()
    engine.dispose()
    assert sorted(r[0] for r in rows) == sorted(dbadmin.role_names(p))
    assert all(r[1] for r in rows)


def test_the_panel_reads_its_own_tables_only(migrated: tuple[str, str]) -> None:
    url, p = migrated
    web = p + "ddmail-web"
    assert allowed(url, web, "SELECT * FROM web_accounts")
    assert allowed(url, web, "DELETE FROM web_sessions")
    for other in ("keyhandler_mailbox_keys", "keyhandler_recovery_keys", "backend_mailboxes"):
        assert not allowed(url, web, f"SELECT * FROM {other}")
    assert not allowed(url, web, "SELECT * FROM mail_mailboxes")


def test_mailread_reads_the_six_views_and_nothing_else(migrated: tuple[str, str]) -> None:
    url, p = migrated
    mailread = p + "ddmail_mailread"
    for view in MAIL_VIEWS:
        assert allowed(url, mailread, f"SELECT * FROM {view}")
    assert not allowed(url, mailread, "INSERT INTO mail_domains (domain) VALUES ('x.test')")
    for table in ("backend_mailboxes", "backend_domains", "web_users", "keyhandler_openpgp_keys"):
        assert not allowed(url, mailread, f"SELECT * FROM {table}")


def test_the_operator_role_has_dml_on_the_panels_tables_only(migrated: tuple[str, str]) -> None:
    url, p = migrated
    admin = p + "ddmail-admin"
    assert allowed(url, admin, "UPDATE web_accounts SET gratis = TRUE")
    assert allowed(url, admin, "DELETE FROM web_counters")
    assert allowed(url, admin, "SELECT nextval('web_ledger_id_seq')")
    assert not allowed(url, admin, "DROP TABLE web_counters")
    assert not allowed(url, admin, "SELECT * FROM backend_accounts")
    assert not allowed(url, admin, "SELECT * FROM keyhandler_recovery_keys")


def test_the_stage_and_the_milter_get_what_their_code_reads(migrated: tuple[str, str]) -> None:
    url, p = migrated
    stage, milter = p + "ddmail-pgpstage", p + "ddmail-milter"
    for table in dbadmin.PGPSTAGE_READS:
        assert allowed(url, stage, f"SELECT * FROM {table}")
    assert allowed(
        url,
        stage,
        "UPDATE keyhandler_openpgp_activations SET failure = NULL, failing_since = NULL, "
        "expiry_warned = 0 WHERE address = 'x'",
    )
    assert not allowed(url, stage, "UPDATE keyhandler_openpgp_activations SET fingerprint = 'x'")
    assert not allowed(url, stage, "DELETE FROM keyhandler_openpgp_keys")
    assert not allowed(url, stage, "SELECT * FROM keyhandler_recovery_keys")
    assert allowed(url, milter, "SELECT * FROM mail_senders")
    assert not allowed(url, milter, "SELECT * FROM mail_mailboxes")
    assert not allowed(url, milter, "SELECT * FROM backend_mailboxes")


def test_backend_and_keyhandler_stay_apart(migrated: tuple[str, str]) -> None:
    url, p = migrated
    backend, keyhandler = p + "ddmail-backend", p + "ddmail-keyhandler"
    assert allowed(url, backend, "SELECT * FROM mail_senders")
    assert not allowed(url, backend, "SELECT * FROM keyhandler_mailbox_keys")
    assert not allowed(url, backend, "SELECT * FROM web_users")
    assert allowed(url, keyhandler, "SELECT * FROM keyhandler_recovery_keys")
    assert not allowed(url, keyhandler, "SELECT * FROM backend_mailboxes")


def test_only_root_with_a_userless_url_becomes_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, object]] = []
    for name in ("setgroups", "setgid", "setuid"):
        monkeypatch.setattr(os, name, lambda v, n=name: calls.append((n, v)))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("HOME", "/root")
    dbadmin.become_postgres("sqlite:////var/lib/ddmail/sqlite/ddmail.db")
    dbadmin.become_postgres("postgresql+psycopg://ddmail_test@127.0.0.1/ddmail")
    assert calls == []
    dbadmin.become_postgres("postgresql+psycopg:///ddmail?host=/var/run/postgresql")
    postgres = pwd.getpwnam("postgres")
    assert calls == [("setgroups", []), ("setgid", postgres.pw_gid), ("setuid", postgres.pw_uid)]
    assert os.environ["HOME"] == postgres.pw_dir


def test_operator_commands_run_by_root_use_the_operator_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """root has no database role: on a server, `ddmail admin` reaches the panel's tables as
    ddmail-admin (with its groups, for the audit key and the backend's socket)."""
    calls: list[tuple[str, object]] = []
    for name in ("setgroups", "setgid", "setuid"):
        monkeypatch.setattr(os, name, lambda v, n=name: calls.append((n, v)))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("HOME", "/root")
    dbadmin.become("root", "postgresql+psycopg:///ddmail?host=/var/run/postgresql")
    root = pwd.getpwnam("root")
    assert calls == [
        ("setgroups", os.getgrouplist("root", root.pw_gid)),
        ("setgid", root.pw_gid),
        ("setuid", root.pw_uid),
    ]
    assert dbadmin.ADMIN_ACCOUNT == "ddmail-admin"

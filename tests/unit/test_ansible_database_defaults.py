"""Production's mail lookups use PostgreSQL: rendered with nothing but the Ansible roles'
defaults, every Postfix lookup table and Dovecot's userdb connect to PostgreSQL as a read-only
role, never to a SQLite file (which group postfix could write; docs/security.md)."""

from __future__ import annotations

import re
from pathlib import Path

from ddmail_stack.templates import ROLES_DIR, template_env

POSTFIX_MAPS = sorted(p.name for p in (ROLES_DIR / "postfix" / "templates").glob("sql-*.cf.j2"))


def role_defaults(role: str) -> dict[str, object]:
    """The top-level scalars and lists of a role's defaults/main.yml (the only shapes the DDMail
    roles use; anything else fails here rather than being misread)."""
    found: dict[str, object] = {}
    key = None
    for line in (ROLES_DIR / role / "defaults" / "main.yml").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#") or line == "---":
            continue
        item = re.fullmatch(r"  - (.+)", line)
        if item and key is not None and isinstance(found[key], list):
            found[key].append(item.group(1).strip('"'))  # type: ignore[union-attr]
            continue
        if re.fullmatch(r"  [a-z]+: .*", line):  # a mapping's entry: not a template variable
            continue
        pair = re.fullmatch(r"([a-z0-9_]+):(?: (.*))?", line)
        assert pair, f"unexpected line in {role} defaults: {line!r}"
        key, value = pair.group(1), pair.group(2)
        found[key] = [] if value is None else value.strip('"')
    return found


def test_postfix_lookup_tables_default_to_postgresql() -> None:
    defaults = role_defaults("postfix")
    assert defaults["postfix_db_driver"] == "pgsql"
    # domains, mailboxes, aliases (+ operator aliases), sender logins
    assert len(POSTFIX_MAPS) >= 4
    env = template_env("postfix")
    for name in POSTFIX_MAPS:
        rendered = env.get_template(name).render(defaults)
        assert "dbpath" not in rendered and "sqlite" not in rendered.lower(), name
        # The unix socket, as the SELECT-only role (peer authentication: no password).
        assert re.search(r"^hosts = unix:/var/run/postgresql$", rendered, re.MULTILINE), name
        assert re.search(r"^user = ddmail_mailread$", rendered, re.MULTILINE), name
        assert re.search(r"^password = $", rendered, re.MULTILINE), name


def test_dovecot_userdb_defaults_to_postgresql() -> None:
    defaults = role_defaults("dovecot")
    assert defaults["dovecot_db_driver"] == "pgsql"
    rendered = template_env("dovecot").get_template("dovecot-sql.conf.ext.j2").render(defaults)
    assert re.search(r"^driver = pgsql$", rendered, re.MULTILINE)
    assert "host=/var/run/postgresql " in rendered and "user=ddmail_mailread " in rendered
    assert "sqlite" not in rendered.lower()


def test_the_periodic_job_needs_no_database_directory_by_default() -> None:
    assert role_defaults("ddmail")["ddmail_periodic_writable_paths"] == "[]"


def test_the_docs_say_sqlite_is_not_for_production() -> None:
    repo = Path(__file__).resolve().parents[2]
    for doc in ("README.md", "docs/security.md"):
        text = " ".join((repo / doc).read_text().split())
        assert "SQLite is for trying DDMail and for tests" in text, doc
        assert "production uses PostgreSQL" in text, doc

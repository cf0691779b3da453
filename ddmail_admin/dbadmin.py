"""`ddmail admin db migrate`: bring the schema to the newest version, then (PostgreSQL) give
every relation its owner and every process exactly the access its code uses (DN 33).

Who touches what (read from the code, each service imports only its own models):
- ddmail-web: the panel owns `web_*`.
- ddmail-backend: owns `backend_*` and the `mail_*` views (which read only `backend_*`).
- ddmail-keyhandler: owns `keyhandler_*`.
- ddmail-admin (operator commands, the periodic job): the panel's data through the panel's own
  code (ddmail_web: billing, vouchers, audit, key rotation) = DML on `web_*` and their sequences;
  the backend only over its socket.
- ddmail-pgpstage (ddmail_keyhandler.openpgp_keys.active_keys/expiring/record_delivery/
  mark_warned): reads the OpenPGP keys, activations and mailbox keys, and updates only an
  activation's delivery status and expiry warning.
- ddmail-milter (ddmail_milter.ownership): reads `mail_senders`.
- ddmail_mailread (Postfix, Dovecot's auth, the milter through pg_ident): SELECT on the views.
"""

from __future__ import annotations

import argparse
import os
import pwd
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, make_url, text

from ddmail_admin import target as admin_target
from ddmail_common.db import make_engine
from ddmail_common.migrate import MAIL_VIEWS, upgrade

WEB, BACKEND, KEYHANDLER = "ddmail-web", "ddmail-backend", "ddmail-keyhandler"
ADMIN, PGPSTAGE, MILTER, MAILREAD = (
    "ddmail-admin",
    "ddmail-pgpstage",
    "ddmail-milter",
    ("ddmail_mailread"),
)
ROLES = (WEB, BACKEND, KEYHANDLER, ADMIN, PGPSTAGE, MILTER, MAILREAD)
OWNER_BY_PREFIX = {"web_": WEB, "backend_": BACKEND, "keyhandler_": KEYHANDLER, "mail_": BACKEND}
DML = "SELECT, INSERT, UPDATE, DELETE"
PGPSTAGE_READS = ("keyhandler_openpgp_keys", "keyhandler_openpgp_activations",
                  "keyhandler_mailbox_keys")  # fmt: skip
# The only columns the stage writes: an activation's delivery status and its expiry warning.
PGPSTAGE_UPDATES = ("keyhandler_openpgp_activations", ("failing_since", "failure", "expiry_warned"))
# Alembic's own bookkeeping stays with whoever migrates (the superuser).
UNOWNED = ("alembic_version",)


class GrantError(Exception):
    """The schema holds a relation no rule covers: refuse rather than guess its access."""


@dataclass(frozen=True)
class Relation:
    name: str
    kind: str  # "table", "view" or "sequence"
    owned_by_table: bool = False  # a serial column's sequence follows its table's owner


def owner_of(name: str) -> str:
    for prefix, role in OWNER_BY_PREFIX.items():
        if name.startswith(prefix):
            return role
    raise GrantError(f"{name}: no owner rule (add its prefix to ddmail_admin/dbadmin.py)")


def plan(relations: Iterable[Relation], role_prefix: str = "") -> list[str]:
    """The statements that give RELATIONS their owners and grants: every ddmail role's access is
    revoked first and granted again, so the result is exactly the rules, run after run."""

    def q(role: str) -> str:
        return _quote(role_prefix + role)

    everyone = ", ".join(q(r) for r in ROLES)
    out: list[str] = []
    for rel in sorted(relations, key=lambda r: (r.kind != "sequence", r.name)):
        if rel.name in UNOWNED:
            continue
        owner = owner_of(rel.name)
        obj = ("SEQUENCE " if rel.kind == "sequence" else "TABLE ") + f'"{rel.name}"'
        if not rel.owned_by_table:  # linked sequences move with their table (ALTER TABLE)
            alter = {"table": "TABLE", "view": "VIEW", "sequence": "SEQUENCE"}[rel.kind]
            out.append(f'ALTER {alter} "{rel.name}" OWNER TO {q(owner)}')
        out.append(f"REVOKE ALL ON {obj} FROM PUBLIC, {everyone}")
        out.append(f"GRANT ALL ON {obj} TO {q(owner)}")
        if rel.name.startswith("web_"):
            what = "USAGE, SELECT" if rel.kind == "sequence" else DML
            out.append(f"GRANT {what} ON {obj} TO {q(ADMIN)}")
        if rel.name in MAIL_VIEWS:
            out.append(f"GRANT SELECT ON {obj} TO {q(MAILREAD)}")
        if rel.name == "mail_senders":
            out.append(f"GRANT SELECT ON {obj} TO {q(MILTER)}")
        if rel.name in PGPSTAGE_READS:
            out.append(f"GRANT SELECT ON {obj} TO {q(PGPSTAGE)}")
        if rel.name == PGPSTAGE_UPDATES[0]:
            cols = ", ".join(f'"{c}"' for c in PGPSTAGE_UPDATES[1])
            out.append(f"GRANT UPDATE ({cols}) ON {obj} TO {q(PGPSTAGE)}")
    return out


def relations(conn: Connection) -> list[Relation]:
    rows = conn.execute(
        text(
            "SELECT c.relname, c.relkind, EXISTS (SELECT 1 FROM pg_depend d "
            "  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid "
            "  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'S', 'p')"
        )
    ).all()
    kinds = {"r": "table", "p": "table", "v": "view", "S": "sequence"}
    return [Relation(str(name), kinds[str(kind)], bool(linked)) for name, kind, linked in rows]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def ensure_roles(conn: Connection, role_prefix: str) -> bool:
    """Every role exists and may log in (through peer authentication: none has a password).
    Returns whether the migrator is a superuser."""
    superuser = bool(
        conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar()
    )
    for role in ROLES:
        name = role_prefix + role
        quoted = _quote(name)
        exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": name})
        verb = "ALTER" if exists.first() else "CREATE"
        conn.execute(text(f"{verb} ROLE {quoted} LOGIN"))
        conn.execute(text(f"GRANT CONNECT ON DATABASE {_current_db(conn)} TO {quoted}"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {quoted}"))
        if not superuser:
            # A CREATEROLE migrator (the tests' role) hands tables over only to roles it is a
            # member of; the production migrator is the superuser postgres and needs none.
            conn.execute(text(f"GRANT {quoted} TO current_user"))
            # and a new owner needs CREATE on the schema (the superuser is exempt); taken back
            # in apply_grants, so no service may create relations.
            conn.execute(text(f"GRANT CREATE ON SCHEMA public TO {quoted}"))
    return superuser


def _current_db(conn: Connection) -> str:
    return _quote(str(conn.execute(text("SELECT current_database()")).scalar_one()))


def apply_grants(db_url: str, role_prefix: str = "") -> int:
    """Owners and grants in one transaction; returns how many relations were covered."""
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            ensure_roles(conn, role_prefix)
            rels = relations(conn)
            for statement in plan(rels, role_prefix):
                conn.execute(text(statement))
            everyone = ", ".join(_quote(r) for r in role_names(role_prefix))
            conn.execute(text(f"REVOKE CREATE ON SCHEMA public FROM {everyone}"))
    finally:
        engine.dispose()
    return len([r for r in rels if r.name not in UNOWNED])


def migrate(db_url: str, role_prefix: str = "") -> str:
    upgrade(db_url)
    if db_url.startswith("sqlite"):
        return "database upgraded (SQLite: one file, no roles)"
    count = apply_grants(db_url, role_prefix)
    return f"database upgraded; owners and grants applied to {count} relations"


# The account operator commands use for the panel's data and the backend (the periodic
# timer's too); peer authentication maps it to its own role.
ADMIN_ACCOUNT = "ddmail-admin"


def become(account: str, db_url: str, supplementary: bool = True) -> None:
    """Run as root on a server (a userless PostgreSQL URL): become ACCOUNT, which peer
    authentication maps to its role; root itself has none. Anyone else, SQLite and URLs that
    name their user (a local stack) are left as they are. Call it after the config is read
    (root:ddmail 0640)."""
    if os.geteuid() != 0 or db_url.startswith("sqlite") or make_url(db_url).username:
        return
    entry = pwd.getpwnam(account)
    os.setgroups(os.getgrouplist(account, entry.pw_gid) if supplementary else [])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ["HOME"] = entry.pw_dir


def become_postgres(db_url: str) -> None:
    """The migration: OS user postgres is mapped to the superuser role."""
    become("postgres", db_url, supplementary=False)


def cmd_migrate(args: argparse.Namespace) -> int:
    cfg = admin_target.config(args)
    become_postgres(cfg.db_url)
    print(migrate(cfg.db_url, args.role_prefix))
    return 0


def add_commands(admin: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    db = admin.add_parser("db", help="the database schema, owners and grants")
    db.add_argument("action", choices=["migrate"])
    # Tests only: several databases on one cluster need roles of their own.
    db.add_argument("--role-prefix", default="", help=argparse.SUPPRESS)
    admin_target.add_arguments(db)
    db.set_defaults(func=cmd_migrate)


def role_names(role_prefix: str = "") -> Sequence[str]:
    return [role_prefix + r for r in ROLES]

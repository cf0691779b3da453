"""`ddmail stack up`: the whole product on loopback, from the production templates."""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import hashlib
import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text

from ddmail_admin import target as admin_target
from ddmail_common.client import ServiceClient
from ddmail_common.migrate import MAIL_VIEWS, upgrade
from ddmail_stack import anonymity, config_file, dns, filters, mta
from ddmail_stack.layout import GLOBAL_DOMAIN, MAX_ROOT_LEN, StackLayout
from ddmail_stack.panel import start_panel
from ddmail_stack.processes import port_open, python_script, spawn, stop, unix_accepts, wait_for
from ddmail_stack.secrets import ensure_secret
from ddmail_stack.sink import start_sink
from ddmail_stack.tls import make_local_tls
from ddmail_web.envelope import MasterKeys

# The local stack uses the production argon2id cost (OWASP: 19 MiB, t=2), so benchmarks and
# tests measure what users get.
LOCAL_ARGON2_MEMORY_KIB = 19456
LOCAL_ARGON2_TIME_COST = 2


# What the server certificate names (and the next one of a key rollover).
SERVER_NAMES = ["mail." + GLOBAL_DOMAIN, GLOBAL_DOMAIN, "localhost"]


class StackError(Exception):
    pass


def prepare(layout: StackLayout) -> None:
    """Directories, secrets, TLS and database schema (the config file: write_config)."""
    if len(str(layout.root)) > MAX_ROOT_LEN:
        raise StackError(f"--root must be at most {MAX_ROOT_LEN} characters (unix socket limit)")
    for d in (
        layout.etc,
        layout.run,
        layout.secrets,
        layout.tls,
        layout.mail_root,
        layout.log_dir,
        layout.sink_dir,
        layout.db_dir,
    ):
        d.mkdir(parents=True, exist_ok=True)
    # Postfix (as postfix) and Dovecot's mail processes (as vmail) must traverse the root.
    layout.root.chmod(0o711)
    # Traversable, not listable: Dovecot's auth-worker (its own user) opens the unlock token,
    # which alone it owns (mta.render_mail_config); every other secret stays 0600 root.
    layout.secrets.chmod(0o711)
    for name in config_file.SECRETS:
        ensure_secret(layout.secrets / f"{name}.key")
    if not (layout.secrets / "master.keys").exists():
        MasterKeys.generate_file(layout.secrets / "master.keys")
    make_local_tls(
        layout.ca_cert,
        layout.ca_key,
        layout.server_cert,
        layout.server_key,
        SERVER_NAMES,
    )
    upgrade(layout.effective_db_url)
    filters.prepare_dkim_keys(layout)
    if layout.effective_db_url.startswith("sqlite"):
        share_sqlite_with_postfix(layout.db_dir)


def write_config(layout: StackLayout, onion_address: str, i2p_address: str) -> None:
    """The stack's ddmail.toml; its pages publish the onion and I2P names given."""
    (layout.etc / "ddmail.toml").write_text(
        config_file.render(
            layout,
            LOCAL_ARGON2_MEMORY_KIB,
            LOCAL_ARGON2_TIME_COST,
            milter_db_url=mail_db_url(layout, mail_db(layout)),
            onion_address=onion_address,
            i2p_address=i2p_address,
        )
    )


def share_sqlite_with_postfix(db_dir: Path) -> None:
    """Postfix's lookup processes read the SQLite file as user postfix (they drop supplementary
    groups), and a WAL reader needs write access to the -shm file: group postfix, 0660, in a
    setgid directory. Dovecot's userdb reads as root. Production uses PostgreSQL, where the mail
    daemons get a SELECT-only role on the views."""
    gid = grp.getgrnam("postfix").gr_gid
    os.chown(db_dir, 0, gid)
    db_dir.chmod(0o2770)
    for path in db_dir.iterdir():
        os.chown(path, 0, gid)
        path.chmod(0o660)


def mail_db(layout: StackLayout) -> mta.MailDb:
    """How Postfix and Dovecot reach the views: the SQLite file, or a PostgreSQL role that may
    only SELECT from the four mail_* views."""
    db = mta.MailDb.from_url(layout.effective_db_url)
    if db.driver != "pgsql":
        return db
    role = "ddmail_mailread_" + hashlib.sha256(str(layout.root).encode()).hexdigest()[:10]
    password = ensure_secret(layout.secrets / "mailread.pg").decode()
    engine = create_engine(layout.effective_db_url, hide_parameters=True)
    with engine.begin() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role})
        verb = "ALTER" if exists.first() else "CREATE"
        # Role statements take no bound parameters; ROLE and PASSWORD are hex digits only.
        assert all(c in "0123456789abcdef" for c in password)
        conn.execute(text(f"{verb} ROLE {role} LOGIN PASSWORD '{password}'"))
        conn.execute(text(f"GRANT CONNECT ON DATABASE {db.pg_dbname} TO {role}"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
        views = ", ".join(MAIL_VIEWS)
        conn.execute(text(f"GRANT SELECT ON {views} TO {role}"))
    engine.dispose()
    return dataclasses.replace(db, pg_user=role, pg_password=password)


def mail_db_url(layout: StackLayout, db: mta.MailDb) -> str:
    """DB as a URL for the submission milter: the SQLite file, or the SELECT-only role with its
    password in a libpq passfile (never in the URL)."""
    if db.driver != "pgsql":
        return f"sqlite:///{db.sqlite_path}"
    passfile = layout.secrets / "mailread.pgpass"
    fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"*:{db.pg_port}:{db.pg_dbname}:{db.pg_user}:{db.pg_password}\n")
    return (
        f"postgresql+psycopg://{db.pg_user}@{db.pg_hosts[0]}:{db.pg_port}/{db.pg_dbname}"
        f"?passfile={passfile}"
    )


def admin_client(layout: StackLayout) -> ServiceClient:
    return admin_target.admin_client(config_file.load(layout))


@dataclass
class Stack:
    layout: StackLayout
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    sink: object | None = None
    # The onion and I2P names the stack's tor and i2pd made keys for (set by up()).
    addresses: tuple[str, str] = ("", "")

    def start_service(self, name: str) -> None:
        config = str(self.layout.etc / "ddmail.toml")
        self.procs[name] = spawn(
            [python_script(f"ddmail-{name}"), "--config", config],
            self.layout.log_dir / f"{name}.log",
        )
        # Tests and operators find a service by its pid file (its process group leader).
        (self.layout.run / f"{name}.pid").write_text(f"{self.procs[name].pid}\n")
        sock = self.layout.socket(name)
        wait_for(name, lambda: sock.exists() and unix_accepts(sock))

    def adopt(self, started: dict[str, subprocess.Popen[bytes]]) -> None:
        """Daemons started elsewhere: stopped with the stack, found by their pid files."""
        for name, proc in started.items():
            self.procs[name] = proc
            (self.layout.run / f"{name}.pid").write_text(f"{proc.pid}\n")

    def stop_service(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            stop(proc)
        # Whoever restarted the service (an operator, a test) recorded it in its pid file.
        pid_file = self.layout.run / f"{name}.pid"
        if pid_file.exists():
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                os.killpg(int(pid_file.read_text()), signal.SIGTERM)
            pid_file.unlink()

    def up(self) -> None:
        L = self.layout
        prepare(L)
        # Tor and i2pd first: the config publishes the names they made keys for.
        self.adopt(anonymity.start_anonymity(L))
        onion, i2p = self.addresses = anonymity.addresses(L)
        write_config(L, onion, i2p)
        self.start_service("keyhandler")
        wait_for("keyhandler unlock port", lambda: port_open(L.unlock_port))
        self.start_service("backend")  # it adds the config's global domain at start
        mta.render_mail_config(L, db=mail_db(L))
        self.sink = start_sink(L.sink_dir, L.sink_port)
        self.procs["dovecot"] = mta.start_dovecot(L)
        self.start_service("pgpstage")
        self.start_service("milter")  # before Postfix: submission fails closed without it
        self.start_service("tlsrpt")  # the TLS report parser Postfix hands report copies to
        filters.render_filter_config(L)
        self.adopt(filters.start_filters(L))  # before Postfix: it fails closed
        self.adopt(dns.start_resolver(L))  # Postfix's DNS, with --dns
        self.procs["postfix"] = mta.start_postfix(L)
        self.procs["web"], self.procs["nginx"] = start_panel(L)
        for port in (
            L.smtp_port,
            L.submission_port,
            L.smtps_port,
            L.imaps_port,
            L.web_port,
            L.sink_port,
            L.anon_http_port,
            L.anon_imap_port,
            L.anon_submission_port,
        ):
            wait_for(f"port {port}", lambda p=port: port_open(p))
        L.write_stack_json(onion, i2p)

    def down(self) -> None:
        if "postfix" in self.procs:
            mta.stop_postfix(self.layout, self.procs.pop("postfix"))
        if "dovecot" in self.procs:
            mta.stop_dovecot(self.procs.pop("dovecot"))
        for name in list(self.procs):
            self.stop_service(name)
        if self.sink is not None:
            self.sink.stop()  # type: ignore[attr-defined]
        (self.layout.root / "stack.json").unlink(missing_ok=True)


PERIODIC_EVERY = 60.0


def run_periodic(layout: StackLayout, done: threading.Event) -> None:
    """The panel's periodic job (billing, OpenPGP audit entries) every minute, as a timer
    would in production."""
    from ddmail_web import periodic
    from ddmail_web.state import panel_database

    cfg = config_file.load(layout)
    db = panel_database(cfg)
    client = admin_target.admin_client(cfg)
    while not done.wait(PERIODIC_EVERY):
        try:
            periodic.run(db, client, cfg.web)
        except Exception as exc:
            print(f"periodic job failed: {type(exc).__name__}", flush=True)


def run_until_signalled(stack: Stack) -> None:
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    threading.Thread(target=run_periodic, args=(stack.layout, done), daemon=True).start()
    pid_file = stack.layout.run / "stack.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        done.wait()
    finally:
        stack.down()
        pid_file.unlink(missing_ok=True)

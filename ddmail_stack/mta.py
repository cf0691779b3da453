"""Postfix and Dovecot for a local stack, from the production Ansible templates.

The Jinja2 templates in ``ansible/roles/{postfix,dovecot}/templates`` are the only copy of the
mail configuration. Ansible renders them in production; :func:`render_mail_config` renders the
same files with local values (loopback, high ports, the stack root, SQLite) derived from a
:class:`StackLayout`. Both daemons then run as foreground children of the caller (daemonised
masters become zombies under a non-reaping PID 1): ``postfix -c DIR start-fg`` and
``dovecot -F -c FILE``, each in its own process group, readiness checked on their ports.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal
from urllib.parse import unquote, urlsplit

from ddmail_stack import dns
from ddmail_stack.layout import GLOBAL_DOMAIN, StackLayout
from ddmail_stack.templates import template_env, tls_policy

# (template, file name, mode, group) per role; the group owns files holding a DB password.
POSTFIX_FILES: tuple[tuple[str, str, int, str], ...] = (
    ("main.cf.j2", "main.cf", 0o644, "root"),
    ("master.cf.j2", "master.cf", 0o644, "root"),
    ("sql-domains.cf.j2", "sql-domains.cf", 0o640, "postfix"),
    ("sql-mailboxes.cf.j2", "sql-mailboxes.cf", 0o640, "postfix"),
    ("sql-aliases.cf.j2", "sql-aliases.cf", 0o640, "postfix"),
    ("sql-senders.cf.j2", "sql-senders.cf", 0o640, "postfix"),
    ("sql-tlsrpt.cf.j2", "sql-tlsrpt.cf", 0o640, "postfix"),
)
DOVECOT_FILES: tuple[tuple[str, str, int, str], ...] = (
    ("dovecot.conf.j2", "dovecot.conf", 0o644, "root"),
    ("dovecot-sql.conf.ext.j2", "dovecot-sql.conf.ext", 0o640, "dovecot"),
    ("auth-keyhandler.lua.j2", "auth-keyhandler.lua", 0o640, "dovecot"),
)

VMAIL_USER = "vmail"
# Dovecot's auth-worker runs as this user: it parses network input, and only it (with the
# keyhandler) may read the unlock token file.
AUTH_WORKER_USER = "ddmail-auth"
START_TIMEOUT = 60.0  # the first Postfix start on a fresh queue takes ~2.5 s (post-install)
STOP_TIMEOUT = 30.0

# What subprocess accepts as stdout/stderr.
Target = int | IO[bytes] | None


class MtaError(RuntimeError):
    """Postfix or Dovecot could not be configured, started or driven."""


@dataclass(frozen=True)
class MailDb:
    """Where Postfix's lookup maps and Dovecot's userdb read the mail_* views."""

    driver: Literal["sqlite", "pgsql"]
    sqlite_path: Path | None = None
    pg_hosts: tuple[str, ...] = ()
    pg_port: int = 5432
    pg_dbname: str = ""
    pg_user: str = ""
    pg_password: str = ""

    @classmethod
    def from_url(cls, url: str) -> MailDb:
        """``sqlite:////abs/path`` or ``postgresql[+driver]://user:password@host:port/db``."""
        parts = urlsplit(url)
        scheme = parts.scheme.split("+", 1)[0]
        if scheme == "sqlite":
            path = Path(unquote(parts.path))
            if not path.is_absolute() or parts.netloc:
                raise MtaError(f"SQLite URL must be sqlite:////absolute/path, got {url!r}")
            return cls(driver="sqlite", sqlite_path=path)
        if scheme in ("postgresql", "postgres"):
            if not parts.hostname or not parts.username:
                raise MtaError("PostgreSQL URL needs a user and a host")
            return cls(
                driver="pgsql",
                pg_hosts=(parts.hostname,),
                pg_port=parts.port or 5432,
                pg_dbname=unquote(parts.path.lstrip("/")),
                pg_user=unquote(parts.username),
                pg_password=unquote(parts.password or ""),
            )
        raise MtaError(f"unsupported database URL scheme {parts.scheme!r}")


# --- users and templates ---------------------------------------------------------------------


def ensure_vmail_user(name: str = VMAIL_USER) -> tuple[int, int]:
    """Create the system user that owns all maildirs if it is missing; return (uid, gid)."""
    return ensure_system_user(name)


def ensure_system_user(name: str) -> tuple[int, int]:
    """Create a system user (and its group), no home, no shell, if missing; return (uid, gid)."""
    detail = ""
    for _ in range(20):
        try:
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
        except KeyError:
            pass
        result = subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            capture_output=True,
            check=False,
        )
        # A concurrent stack may have created it (useradd exits 9) or hold the lock on
        # /etc/passwd (exits 10): look again.
        detail = result.stderr.decode(errors="replace").strip()
        if result.returncode not in (0, 9):
            time.sleep(0.1)
    raise MtaError(f"useradd {name} failed: {detail}")


def instance_name(layout: StackLayout) -> str:
    """Dovecot instance_name, unique per stack root."""
    digest = hashlib.sha256(str(layout.root.resolve()).encode()).hexdigest()[:12]
    return f"ddmail-{digest}"


def postfix_vars(layout: StackLayout, db: MailDb) -> dict[str, object]:
    """Local values for every variable of ansible/roles/postfix/defaults/main.yml."""
    return {
        **tls_policy(),
        "postfix_config_directory": str(layout.postfix_dir),
        "postfix_queue_directory": str(layout.postfix_queue),
        "postfix_data_directory": str(layout.postfix_data),
        "postfix_myhostname": f"mail.{GLOBAL_DOMAIN}",
        "postfix_inet_interfaces": "127.0.0.1",
        "postfix_inet_protocols": "ipv4",
        "postfix_smtp_listen": f"127.0.0.1:{layout.smtp_port}",
        "postfix_submission_listen": f"127.0.0.1:{layout.submission_port}",
        "postfix_smtps_listen": f"127.0.0.1:{layout.smtps_port}",
        "postfix_anon_submission_listen": f"127.0.0.1:{layout.anon_submission_port}",
        "postfix_mynetworks": "192.0.2.1/32",
        "postfix_relayhost": f"[127.0.0.1]:{layout.sink_port}",
        **dns.postfix_routes(layout),
        "postfix_smtp_tls_ca_file": str(layout.ca_cert),
        "postfix_maillog_file": "/dev/stdout",
        "postfix_tls_cert_file": str(layout.server_cert),
        "postfix_tls_key_file": str(layout.server_key),
        # Through the OpenPGP stage, which hands every message on to Dovecot's LMTP.
        "postfix_virtual_transport": f"lmtp:unix:{layout.socket('pgpstage')}",
        "postfix_tlsrpt_transport": f"lmtp:unix:{layout.socket('tlsrpt')}",
        "postfix_dovecot_auth_socket": str(layout.dovecot_auth_socket),
        "postfix_submission_milter": f"unix:{layout.socket('milter')}",
        "postfix_filter_milter": f"unix:{layout.rspamd_milter_socket}",
        "postfix_message_size_limit": 26214400,
        "postfix_db_driver": db.driver,
        "postfix_sqlite_path": str(db.sqlite_path or ""),
        "postfix_pgsql_hosts": [f"inet:{host}:{db.pg_port}" for host in db.pg_hosts],
        "postfix_pgsql_dbname": db.pg_dbname,
        "postfix_pgsql_user": db.pg_user,
        "postfix_pgsql_password": db.pg_password,
    }


SIEVE_SCRIPTS = ("spam-to-junk", "learn-spam", "learn-ham")


def render_sieve(layout: StackLayout, variables: Mapping[str, object]) -> None:
    """The global Sieve scripts and the learning program, compiled as root (Dovecot cannot
    write next to them), as the dovecot role does."""
    env = template_env("dovecot")
    sieve_dir = layout.dovecot_dir / "sieve"
    (sieve_dir / "bin").mkdir(parents=True, exist_ok=True)
    for name in SIEVE_SCRIPTS:
        _write(
            sieve_dir / f"{name}.sieve",
            env.get_template(f"sieve/{name}.sieve.j2").render(variables),
            0o644,
            "root",
        )
    learn = env.get_template("sieve/rspamd-learn.sh.j2").render(variables)
    _write(sieve_dir / "bin" / "rspamd-learn", learn, 0o755, "root")
    conf = str(layout.dovecot_dir / "dovecot.conf")
    for name in SIEVE_SCRIPTS:
        _run([_tool("sievec"), "-c", conf, str(sieve_dir / f"{name}.sieve")])


def dovecot_vars(
    layout: StackLayout,
    db: MailDb,
    *,
    keyhandler_token_file: Path,
    vmail_uid: int,
    vmail_gid: int,
    test_tuning: bool,
) -> dict[str, object]:
    """Local values for every variable of ansible/roles/dovecot/defaults/main.yml."""
    return {
        **tls_policy(),
        "dovecot_config_dir": str(layout.dovecot_dir),
        "dovecot_base_dir": str(layout.dovecot_base),
        "dovecot_state_dir": str(layout.dovecot_state),
        "dovecot_instance_name": instance_name(layout),
        "dovecot_mail_root": str(layout.mail_root),
        "dovecot_vmail_uid": vmail_uid,
        "dovecot_vmail_gid": vmail_gid,
        "dovecot_listen": "127.0.0.1",
        "dovecot_imaps_port": layout.imaps_port,
        "dovecot_anon_imap_address": "127.0.0.1",
        "dovecot_anon_imap_port": layout.anon_imap_port,
        "dovecot_mailbox_quota_mb": layout.mailbox_quota_mb,
        # The OpenPGP stage runs as root in the local stack (as every service does).
        "dovecot_lmtp_socket_user": "root",
        "dovecot_log_path": "/dev/stderr",
        "dovecot_ssl_cert_file": str(layout.server_cert),
        "dovecot_ssl_key_file": str(layout.server_key),
        "dovecot_keyhandler_unlock_url": f"http://127.0.0.1:{layout.unlock_port}/v1/unlock",
        "dovecot_keyhandler_token_file": str(keyhandler_token_file),
        "dovecot_auth_worker_user": AUTH_WORKER_USER,
        # The SQLite file and its directory belong to group postfix (share_sqlite_with_postfix).
        "dovecot_auth_worker_extra_groups": ["dovecot", "postfix"]
        if db.driver == "sqlite"
        else ["dovecot"],
        "dovecot_keyhandler_request_timeout_msecs": 5000,
        "dovecot_keyhandler_connect_timeout_msecs": 1000,
        "dovecot_db_driver": db.driver,
        "dovecot_sqlite_path": str(db.sqlite_path or ""),
        "dovecot_pgsql_hosts": list(db.pg_hosts),
        "dovecot_pgsql_port": db.pg_port,
        "dovecot_pgsql_dbname": db.pg_dbname,
        "dovecot_pgsql_user": db.pg_user,
        "dovecot_pgsql_password": db.pg_password,
        "dovecot_test_tuning": test_tuning,
        "dovecot_sieve_dir": str(layout.dovecot_dir / "sieve"),
        "dovecot_rspamd_controller_socket": str(layout.rspamd_controller_socket),
        "dovecot_rspamd_group": "_rspamd",
        "dovecot_spam_filing": True,
    }


def _write(path: Path, text: str, mode: int, group: str) -> None:
    """Atomically replace PATH (owner root) with the given mode and group."""
    gid = grp.getgrnam(group).gr_gid
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        os.fchown(fd, 0, gid)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _render_role(
    role: str,
    files: Iterable[tuple[str, str, int, str]],
    target: Path,
    variables: Mapping[str, object],
) -> None:
    env = template_env(role)
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(0o755)
    for template, name, mode, group in files:
        _write(target / name, env.get_template(template).render(variables), mode, group)


def render_mail_config(
    layout: StackLayout,
    *,
    db: MailDb | None = None,
    keyhandler_token_file: Path | None = None,
    vmail_uid: int | None = None,
    vmail_gid: int | None = None,
    test_tuning: bool = True,
) -> None:
    """Render Postfix's and Dovecot's config into layout.postfix_dir / layout.dovecot_dir.

    Defaults: the DB of layout.effective_db_url, the stack's "dovecot" caller secret as the
    unlock token, the vmail user (created if missing), and test tuning on (no auth penalty).
    Also creates the queue, data, state and mail directories with the owners the daemons need.
    """
    if db is None:
        db = MailDb.from_url(layout.effective_db_url)
    if keyhandler_token_file is None:
        keyhandler_token_file = layout.secrets / "dovecot.key"
    if vmail_uid is None or vmail_gid is None:
        uid, gid = ensure_vmail_user()
        vmail_uid = uid if vmail_uid is None else vmail_uid
        vmail_gid = gid if vmail_gid is None else vmail_gid

    for directory in (
        layout.postfix_queue,
        layout.postfix_data,
        layout.dovecot_state,
        layout.mail_root,
        layout.dovecot_base,
    ):
        directory.mkdir(parents=True, exist_ok=True)
    postfix = pwd.getpwnam("postfix")
    os.chown(layout.postfix_data, postfix.pw_uid, postfix.pw_gid)
    layout.postfix_data.chmod(0o700)
    layout.dovecot_state.chmod(0o750)
    os.chown(layout.mail_root, vmail_uid, vmail_gid)
    layout.mail_root.chmod(0o700)
    # The token file belongs to the auth-worker's user alone (the keyhandler runs as root here).
    auth_uid, auth_gid = ensure_system_user(AUTH_WORKER_USER)
    os.chown(keyhandler_token_file, auth_uid, auth_gid)
    keyhandler_token_file.chmod(0o600)

    _render_role("postfix", POSTFIX_FILES, layout.postfix_dir, postfix_vars(layout, db))
    variables = dovecot_vars(
        layout,
        db,
        keyhandler_token_file=keyhandler_token_file,
        vmail_uid=vmail_uid,
        vmail_gid=vmail_gid,
        test_tuning=test_tuning,
    )
    _render_role("dovecot", DOVECOT_FILES, layout.dovecot_dir, variables)
    render_sieve(layout, variables)


# --- processes -------------------------------------------------------------------------------


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _run(argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        argv, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        output = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise MtaError(f"{' '.join(argv)} exited {result.returncode}: {output}")
    return result


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def smtp_greets(port: int, host: str = "127.0.0.1") -> bool:
    """True once an smtpd answers "220" on PORT.

    Postfix's master accepts connections itself, so an open port does not prove that smtpd
    can start with the current configuration.
    """
    try:
        with socket.create_connection((host, port), timeout=2.0) as sock:
            greeting = sock.recv(512)
            with contextlib.suppress(OSError):
                sock.sendall(b"QUIT\r\n")
                sock.recv(512)
            return greeting.startswith(b"220")
    except OSError:
        return False


def wait_for_ports(
    ports: Iterable[int],
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = START_TIMEOUT,
    what: str = "daemon",
    greet: bool = False,
) -> None:
    """Wait until every port accepts on 127.0.0.1 (with GREET: answers an SMTP "220").

    Fails early if PROC exits meanwhile.
    """
    ready = smtp_greets if greet else port_accepts
    pending = list(ports)
    deadline = time.monotonic() + timeout
    while pending:
        if proc is not None and proc.poll() is not None:
            raise MtaError(f"{what} exited with {proc.returncode} before listening on {pending}")
        pending = [port for port in pending if not ready(port)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise MtaError(f"{what}: ports {pending} not accepting after {timeout:.0f} s")
        time.sleep(0.05)


@contextlib.contextmanager
def _output(stdout: Target, stderr: Target, log_file: Path) -> Iterator[tuple[Target, Target]]:
    """The caller's targets, or a pipe redacted into LOG_FILE (log dir of the stack)."""
    if stdout is not None or stderr is not None:
        yield stdout, stderr
        return
    from ddmail_stack.processes import log_pipe

    log_file.parent.mkdir(parents=True, exist_ok=True)
    write_fd, _ = log_pipe(log_file)
    try:
        yield write_fd, write_fd
    finally:
        os.close(write_fd)


def start_postfix(
    layout: StackLayout,
    *,
    stdout: Target = None,
    stderr: Target = None,
    wait: bool = True,
) -> subprocess.Popen[bytes]:
    """``postfix -c DIR start-fg`` as a child in its own process group.

    Postfix logs to its stdout (maillog_file = /dev/stdout): pass a pipe to a redactor as
    STDOUT/STDERR, or neither to get layout.log_dir/postfix.log through the stack's redactor.
    Unless WAIT is false, waits until submissions accepts and MX and submission answer "220".
    """
    with _output(stdout, stderr, layout.log_dir / "postfix.log") as (out, err):
        proc = subprocess.Popen(
            # With --dns, in the mount namespace whose resolv.conf names the stack's Unbound.
            dns.with_resolver(
                layout, [_tool("postfix"), "-c", str(layout.postfix_dir), "start-fg"]
            ),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    if wait:
        try:
            wait_for_ports((layout.smtps_port,), proc, what="postfix")
            wait_for_ports(
                (layout.smtp_port, layout.submission_port), proc, what="postfix", greet=True
            )
        except BaseException:
            stop_postfix(layout, proc)
            raise
    return proc


def start_dovecot(
    layout: StackLayout,
    *,
    stdout: Target = None,
    stderr: Target = None,
    wait: bool = True,
) -> subprocess.Popen[bytes]:
    """``dovecot -F -c FILE`` as a child in its own process group (log_path = /dev/stderr).

    Without STDOUT/STDERR the output goes to layout.log_dir/dovecot.log through the redactor.
    Waits until IMAPS accepts and the LMTP and SASL sockets exist unless WAIT is false.
    """
    conf = layout.dovecot_dir / "dovecot.conf"
    with _output(stdout, stderr, layout.log_dir / "dovecot.log") as (out, err):
        proc = subprocess.Popen(
            [_tool("dovecot"), "-F", "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    if wait:
        try:
            wait_for_ports((layout.imaps_port,), proc, what="dovecot")
            deadline = time.monotonic() + START_TIMEOUT
            sockets = (layout.dovecot_lmtp_socket, layout.dovecot_auth_socket)
            while not all(path.exists() for path in sockets):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise MtaError(f"dovecot: sockets {[str(s) for s in sockets]} missing")
                time.sleep(0.05)
        except BaseException:
            stop_dovecot(proc)
            raise
    return proc


def _reap(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for PROC; escalate to SIGTERM, then SIGKILL on its process group."""
    try:
        proc.wait(timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(5.0)
            return
        except subprocess.TimeoutExpired:
            continue
    raise MtaError(f"process {proc.pid} did not exit")


def stop_postfix(
    layout: StackLayout,
    proc: subprocess.Popen[bytes],
    timeout: float = STOP_TIMEOUT,
) -> None:
    """``postfix -c DIR stop``, then wait for the start-fg child."""
    if proc.poll() is None:
        subprocess.run(
            [_tool("postfix"), "-c", str(layout.postfix_dir), "stop"],
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    _reap(proc, timeout)


def stop_dovecot(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM to the foreground master (it stops its children), then wait."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    _reap(proc, timeout)


# --- queue and reload ------------------------------------------------------------------------


def postfix_reload(layout: StackLayout) -> None:
    """``postfix -c DIR reload``: needed after a new domain row (cached by trivial-rewrite)."""
    _run([_tool("postfix"), "-c", str(layout.postfix_dir), "reload"])


def dovecot_reload(layout: StackLayout) -> None:
    """``dovecot -c FILE reload``: new processes with the configuration and certificate read
    again."""
    _run([_tool("dovecot"), "-c", str(layout.dovecot_dir / "dovecot.conf"), "reload"])


def postqueue_flush(layout: StackLayout) -> None:
    """``postqueue -c DIR -f``: retry every deferred message now."""
    _run([_tool("postqueue"), "-c", str(layout.postfix_dir), "-f"])


def postqueue_list(layout: StackLayout) -> list[dict[str, object]]:
    """The queue as ``postqueue -c DIR -j`` reports it: one dict per message.

    Keys include queue_name (active/deferred/hold/incoming), queue_id, arrival_time,
    message_size, sender, and recipients (list of {address, delay_reason?}).
    """
    result = _run([_tool("postqueue"), "-c", str(layout.postfix_dir), "-j"])
    entries: list[dict[str, object]] = []
    for line in result.stdout.decode(errors="replace").splitlines():
        if line.strip():
            entry = json.loads(line)
            if isinstance(entry, dict):
                entries.append(entry)
    return entries

"""The mail filters of a local stack: Redis, rspamd and clamd, from the production templates.

``ansible/roles/{redis,rspamd,clamav}/templates`` are the only copy of their configuration;
:func:`render_filter_config` renders them with local values (sockets and state under the
stack root, test GTUBE patterns, a locally built ClamAV signature database:
freshclam cannot reach its mirror here). Each daemon runs in the foreground as its Debian
package's user, as in production, so the socket groups are the production ones too.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from ddmail_stack.layout import StackLayout
from ddmail_stack.processes import spawn, stop, unix_accepts, wait_for
from ddmail_stack.templates import role_defaults, template_env

RSPAMD_USER = "_rspamd"
REDIS_USER = "redis"
CLAMAV_USER = "clamav"
# rspamd compiles its regular expressions and the public suffix list at start (~15 s cold).
START_TIMEOUT = 120.0

# The test signature database: EICAR's official test file, and one signature of our own so a
# test can tell our database from any other.
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
CUSTOM_MARKER = b"DDMAIL-LOCAL-MALWARE-TEST-SIGNATURE-7f3a9c"
SIGNATURES = (("Eicar-Test-Signature", EICAR), ("DDMail.Test.Custom", CUSTOM_MARKER))


def _own(path: Path, user: str, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(mode)


def _add_to_groups(user: str, groups: tuple[str, ...]) -> None:
    """Production's socket groups (roles rspamd, clamav) for the stack's daemons' users."""
    missing = [g for g in groups if user not in grp.getgrnam(g).gr_mem]
    if missing:
        subprocess.run(["usermod", "-a", "-G", ",".join(missing), user], check=True)


def filter_vars(layout: StackLayout) -> dict[str, object]:
    """Local values for the redis, rspamd and clamav roles' variables."""
    values = {
        **role_defaults("redis"),
        **role_defaults("rspamd"),
        **role_defaults("clamav"),
    }
    values.update(
        {
            "redis_config_file": str(layout.filters_dir / "redis.conf"),
            "redis_socket": str(layout.redis_socket),
            "redis_dir": str(layout.filters_state / "redis"),
            "redis_pidfile": str(layout.filters_state / "redis" / "redis.pid"),
            "rspamd_local_confdir": str(layout.filters_dir / "rspamd"),
            "rspamd_milter_socket": str(layout.rspamd_milter_socket),
            "rspamd_controller_socket": str(layout.rspamd_controller_socket),
            "rspamd_redis_socket": str(layout.redis_socket),
            "rspamd_clamd_socket": str(layout.clamd_socket),
            "rspamd_log_level": "info",
            "rspamd_dkim_key_dir": str(layout.dkim_keys),
            # A key switch reaches rspamd within seconds (production: a minute).
            "rspamd_map_watch_interval": "2s",
            "rspamd_dns_nameservers": [layout.dns_server] if layout.dns_server else [],
            "rspamd_ip_blocklists": False,  # no Internet
            "rspamd_sender_dns_checks": False,
            "rspamd_test_patterns": True,
            "clamav_config_file": str(layout.filters_dir / "clamd.conf"),
            "clamav_socket": str(layout.clamd_socket),
            "clamav_database_dir": str(layout.filters_state / "clamav"),
            # clamd opens its log with O_NOFOLLOW: a file of its own, not our stderr pipe.
            "clamav_log_file": str(layout.log_dir / "clamd.log"),
            "clamav_pid_file": str(layout.filters_state / "clamav" / "clamd.pid"),
        }
    )
    return values


def _render(role: str, template: str, target: Path, values: Mapping[str, object]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(template_env(role).get_template(template).render(values))
    target.chmod(0o644)


def write_signatures(database_dir: Path) -> None:
    """ClamAV's extended signature format (.ndb): name, any file type, any offset, hex."""
    lines = [f"{name}:0:*:{pattern.hex()}" for name, pattern in SIGNATURES]
    (database_dir / "ddmail-test.ndb").write_text("\n".join(lines) + "\n")


def prepare_dkim_keys(layout: StackLayout) -> None:
    """Before the backend starts (it makes the keys): root's, group _rspamd, setgid so each key
    file gets that group, not listable by others."""
    layout.dkim_keys.mkdir(parents=True, exist_ok=True)
    os.chown(layout.dkim_keys, 0, grp.getgrnam(RSPAMD_USER).gr_gid)
    layout.dkim_keys.chmod(0o2750)


def render_filter_config(layout: StackLayout) -> None:
    values = filter_vars(layout)
    for directory in (layout.rspamd_run, layout.filters_state / "rspamd"):
        _own(directory, RSPAMD_USER, 0o750)
    for directory in (layout.redis_run, layout.filters_state / "redis"):
        _own(directory, REDIS_USER, 0o750)
    for directory in (layout.clamd_run, layout.filters_state / "clamav"):
        _own(directory, CLAMAV_USER, 0o755)
    # Postfix reaches the milter, rspamd reaches Redis (group redis) and clamd (group clamav).
    _add_to_groups("postfix", (RSPAMD_USER,))
    _add_to_groups(RSPAMD_USER, (REDIS_USER, CLAMAV_USER))
    _render("redis", "redis.conf.j2", layout.filters_dir / "redis.conf", values)
    _render("clamav", "clamd.conf.j2", layout.filters_dir / "clamd.conf", values)
    confdir = layout.filters_dir / "rspamd"
    templates = values["rspamd_templates"]
    assert isinstance(templates, list)
    for item in templates:
        _render("rspamd", item["src"], confdir / item["dest"], values)
    disabled = values["rspamd_disabled_modules"]
    assert isinstance(disabled, list)
    for module in disabled:
        _render("rspamd", "disabled.conf.j2", confdir / "local.d" / f"{module}.conf", values)
    write_signatures(layout.filters_state / "clamav")
    clamd_log = layout.log_dir / "clamd.log"
    clamd_log.touch()
    clamav = pwd.getpwnam(CLAMAV_USER)
    os.chown(clamd_log, clamav.pw_uid, clamav.pw_gid)


def rspamd_argv(layout: StackLayout) -> list[str]:
    """The package's rspamd.conf, our rendered local configuration, state under the root."""
    state = layout.filters_state / "rspamd"
    return [
        shutil.which("rspamd") or "/usr/bin/rspamd",
        "-f",
        "-u",
        RSPAMD_USER,
        "-g",
        RSPAMD_USER,
        "-c",
        "/etc/rspamd/rspamd.conf",
        f"--var=LOCAL_CONFDIR={layout.filters_dir / 'rspamd'}",
        f"--var=RUNDIR={layout.rspamd_run}",
        f"--var=DBDIR={state}",
        f"--var=LOGDIR={state}",
    ]


def start_redis(layout: StackLayout) -> subprocess.Popen[bytes]:
    proc = _spawn_as(
        [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            str(layout.filters_dir / "redis.conf"),
        ],
        REDIS_USER,
        layout.log_dir / "redis.log",
    )
    wait_for("redis socket", lambda: unix_accepts(layout.redis_socket), START_TIMEOUT)
    return proc


def start_clamd(layout: StackLayout) -> subprocess.Popen[bytes]:
    """clamd starts as root and drops to user clamav itself (clamd.conf User)."""
    clamd = shutil.which("clamd", path="/usr/sbin:/usr/bin") or "/usr/sbin/clamd"
    proc = spawn(
        [clamd, "--config-file", str(layout.filters_dir / "clamd.conf")],
        layout.log_dir / "clamd-console.log",
    )
    wait_for("clamd socket", lambda: unix_accepts(layout.clamd_socket), START_TIMEOUT)
    return proc


def start_rspamd(layout: StackLayout) -> subprocess.Popen[bytes]:
    """rspamd's main process stays root (it binds the sockets); its workers run as _rspamd."""
    proc = spawn(rspamd_argv(layout), layout.log_dir / "rspamd.log")
    wait_for(
        "rspamd milter socket", lambda: unix_accepts(layout.rspamd_milter_socket), START_TIMEOUT
    )
    return proc


def _spawn_as(argv: list[str], user: str, log_file: Path) -> subprocess.Popen[bytes]:
    entry = pwd.getpwnam(user)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    return spawn(
        [
            "setpriv",
            f"--reuid={entry.pw_uid}",
            f"--regid={entry.pw_gid}",
            "--init-groups",
            "--",
            *argv,
        ],
        log_file,
        env,
    )


def start_filters(layout: StackLayout) -> dict[str, subprocess.Popen[bytes]]:
    """Redis and clamd first: rspamd asks both for every message."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["redis"] = start_redis(layout)
        procs["clamd"] = start_clamd(layout)
        procs["rspamd"] = start_rspamd(layout)
    except BaseException:
        for proc in procs.values():
            stop(proc)
        raise
    return procs

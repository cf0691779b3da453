"""The stack's onion service and I2P destination (issue 12), from the production templates
(ansible/roles/tor, ansible/roles/i2pd), offline.

Tor runs with DisableNetwork 1: it makes the onion service's keys and hostname and never
connects anywhere. i2pd would fetch routers from the Internet at start, so it only ever runs
inside a network namespace of its own (unshare --net), where it makes its destination's keys
file. Both forward to the stack's loopback listeners (layout.anon_*_port), which a test
reaches directly: the real networks are out of reach here. The addresses come from the keys
the daemons made, through the same code the deployment uses (ddmail_common.anon_keys).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from pathlib import Path

from ddmail_common import anon_keys
from ddmail_common.config import PublicSettings
from ddmail_stack.layout import StackLayout
from ddmail_stack.processes import find_tool, spawn, stop
from ddmail_stack.templates import role_defaults, template_env

TOR_USER = "debian-tor"
I2PD_USER = "i2pd"
# The ports the onion service and the I2P tunnels offer (site.yml's ddmail_anon_public_*_port):
# the ones the stack's pages name ([public] defaults).
PUBLIC_PORTS = {
    "http": 80,
    "imap": PublicSettings.anon_imap_port,
    "submission": PublicSettings.anon_submission_port,
}
START_TIMEOUT = 30.0


def tor_dir(layout: StackLayout) -> Path:
    """Tor's configuration and data directory (its account's, 0700)."""
    return layout.root / "tor"


def onion_dir(layout: StackLayout) -> Path:
    """The onion service's keys and hostname."""
    return tor_dir(layout) / "onion"


def i2pd_dir(layout: StackLayout) -> Path:
    """i2pd's configuration and data directory (its account's)."""
    return layout.root / "i2pd"


def i2p_keys_file(layout: StackLayout) -> Path:
    return i2pd_dir(layout) / str(role_defaults("i2pd")["i2pd_keys_file"])


def _targets(layout: StackLayout) -> list[tuple[str, int, int]]:
    """(name, offered port, loopback listener port) of each service."""
    return [
        ("http", PUBLIC_PORTS["http"], layout.anon_http_port),
        ("imap", PUBLIC_PORTS["imap"], layout.anon_imap_port),
        ("submission", PUBLIC_PORTS["submission"], layout.anon_submission_port),
    ]


def tor_vars(layout: StackLayout) -> dict[str, object]:
    root = os.geteuid() == 0
    return {
        **role_defaults("tor"),
        "tor_config_file": str(tor_dir(layout) / "torrc"),
        # Started as root, tor drops to Debian's account, as in production.
        "tor_user": TOR_USER if root else "",
        "tor_data_dir": str(tor_dir(layout) / "data"),
        "tor_hidden_service_dir": str(onion_dir(layout)),
        "tor_pid_file": str(tor_dir(layout) / "tor.pid"),  # written as tor_user
        "tor_log": "notice stderr",
        "tor_disable_network": True,
        "tor_service_ports": [
            {"virtual": offered, "target": f"127.0.0.1:{port}"}
            for _, offered, port in _targets(layout)
        ],
    }


def i2pd_vars(layout: StackLayout) -> dict[str, object]:
    return {
        **role_defaults("i2pd"),
        "i2pd_config_file": str(i2pd_dir(layout) / "i2pd.conf"),
        "i2pd_tunnels_file": str(i2pd_dir(layout) / "tunnels.conf"),
        "i2pd_tunnels_dir": str(i2pd_dir(layout) / "tunnels.d"),
        "i2pd_log": "stdout",
        "i2pd_loglevel": "warn",
        "i2pd_server_tunnels": [
            {
                "name": f"ddmail-{name}",
                "inport": offered,
                "target_host": "127.0.0.1",
                "target_port": port,
            }
            for name, offered, port in _targets(layout)
        ],
    }


def _own(path: Path, user: str) -> None:
    """PATH a directory of USER's alone (as root; otherwise the caller's)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def render_tor_config(layout: StackLayout) -> Path:
    variables = tor_vars(layout)
    for directory in (tor_dir(layout), Path(str(variables["tor_data_dir"])), onion_dir(layout)):
        _own(directory, TOR_USER)
    torrc = Path(str(variables["tor_config_file"]))
    torrc.write_text(template_env("tor").get_template("torrc.j2").render(variables))
    return torrc


def render_i2pd_config(layout: StackLayout) -> Path:
    variables = i2pd_vars(layout)
    _own(i2pd_dir(layout), I2PD_USER)
    Path(str(variables["i2pd_tunnels_dir"])).mkdir(exist_ok=True)
    env = template_env("i2pd")
    for template, key in (
        ("i2pd.conf.j2", "i2pd_config_file"),
        ("tunnels.conf.j2", "i2pd_tunnels_file"),
    ):
        Path(str(variables[key])).write_text(env.get_template(template).render(variables))
    return Path(str(variables["i2pd_config_file"]))


def tor_argv(torrc: Path) -> list[str]:
    """Tor as the production unit runs it: this torrc alone, in the foreground."""
    return [
        find_tool("tor"),
        "--defaults-torrc",
        os.devnull,
        "-f",
        str(torrc),
        "--RunAsDaemon",
        "0",
    ]


def i2pd_command(conf: Path, datadir: Path) -> list[str]:
    """i2pd in the foreground; as root it drops to its Debian account, as in production.
    Never run it but inside a network namespace of its own (i2pd_argv)."""
    argv: list[str] = []
    if os.geteuid() == 0:
        entry = pwd.getpwnam(I2PD_USER)
        argv += [
            find_tool("setpriv"),
            f"--reuid={entry.pw_uid}",
            f"--regid={entry.pw_gid}",
            "--init-groups",
            "--",
        ]
    return [*argv, find_tool("i2pd"), f"--conf={conf}", f"--datadir={datadir}"]


def i2pd_argv(conf: Path, datadir: Path) -> list[str]:
    """i2pd in a network namespace of its own (loopback only, down): it can reach nothing."""
    return [find_tool("unshare"), "--net", "--", *i2pd_command(conf, datadir)]


def start_anonymity(layout: StackLayout) -> dict[str, subprocess.Popen[bytes]]:
    """Tor (offline) and i2pd (in its own network namespace), each making its keys on the
    first start and keeping them under the state root afterwards."""
    torrc = render_tor_config(layout)
    conf = render_i2pd_config(layout)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["tor"] = spawn(tor_argv(torrc), layout.log_dir / "tor.log", env)
        procs["i2pd"] = spawn(i2pd_argv(conf, i2pd_dir(layout)), layout.log_dir / "i2pd.log", env)
        addresses(layout, procs)
    except BaseException:
        for proc in procs.values():
            stop(proc)
        raise
    return procs


def addresses(
    layout: StackLayout,
    procs: dict[str, subprocess.Popen[bytes]] | None = None,
    timeout: float = START_TIMEOUT,
) -> tuple[str, str]:
    """The onion address and the .b32.i2p name, once tor and i2pd have made their keys
    (computed from the keys; tor's own hostname file must agree)."""
    hostname = onion_dir(layout) / anon_keys.TOR_HOSTNAME_FILE
    keys = i2p_keys_file(layout)
    deadline = time.monotonic() + timeout
    while not (hostname.exists() and hostname.stat().st_size and keys.exists()):
        for name, proc in (procs or {}).items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}): see its log")
        if time.monotonic() > deadline:
            raise TimeoutError(f"tor and i2pd made no keys within {timeout:.0f} s")
        time.sleep(0.05)
    onion = anon_keys.onion_address_of_dir(onion_dir(layout))
    if hostname.read_text().strip() != onion:
        raise RuntimeError(f"tor's {hostname} does not name the service's key")
    return onion, anon_keys.check_i2p_keys(_read_complete(keys))


def _read_complete(path: Path) -> bytes:
    """PATH once its writer has finished (i2pd writes its keys file in one go, not atomically)."""
    for _ in range(100):
        try:
            content = path.read_bytes()
            anon_keys.check_i2p_keys(content)
            return content
        except anon_keys.KeyFileError:
            time.sleep(0.05)
    return path.read_bytes()

"""Runs INSIDE the AppArmor check VM (tests/deploy/apparmor_vm.py), as root, with the VM's
/opt/ddmail/venv/bin/python, at boot after apparmor.service has loaded the profiles.

It lays out a small DDMail host the way the deployment does (users, secrets, SQLite state),
runs every DDMail service under its own profile through systemd with the hardening of the real
units, makes each do its real work (signed calls, argon2 key wraps, the unlock listener, gpg in
its child profile, the panel's pages, the operator's commands), probes what the profiles must
refuse, and writes /ci/result.json: the checks and every apparmor="DENIED" line of the kernel
log. A probe names itself "aa-probe" so that its expected denials can be told apart.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import traceback
from pathlib import Path
from typing import Any

RESULT = Path("/ci/result.json")
PY = "/opt/ddmail/venv/bin/python3"
BIN = Path("/opt/ddmail/venv/bin")
CONFIG = Path("/etc/ddmail/ddmail.toml")
SECRETS = Path("/etc/ddmail/secrets")
STATE = Path("/var/lib/ddmail")
DB = STATE / "sqlite" / "ddmail.db"
MAILDIR_FILE = STATE / "mail" / "ddmail.test" / "probe" / "Maildir" / "cur" / "1.eml"
UNLOCK = ("127.0.0.1", 10080)
# A non-loopback address on a dummy interface of the VM, with a listener: a connection to it is
# not loopback, yet never leaves the machine (the VM has no network card either).
OUTSIDE = ("192.0.2.2", 2525)

PROFILES = (
    "ddmail-web",
    "ddmail-backend",
    "ddmail-keyhandler",
    "ddmail-keyhandler//gpg",
    "ddmail-pgpstage",
    "ddmail-pgpstage//gpg",
    "ddmail-milter",
    "ddmail-admin",
    "ddmail-backup",
    "ddmail-nginx",
    "ddmail-postfix-smtpd",
    "ddmail-dovecot-auth",
    "ddmail-dovecot-imap-login",
)
USERS = (
    "ddmail-web",
    "ddmail-backend",
    "ddmail-keyhandler",
    "ddmail-pgpstage",
    "ddmail-milter",
    "ddmail-auth",
    "ddmail-admin",
    "vmail",
)
# secret file -> (owner, group): readable by exactly the two parties (the deployment layout).
SECRET_FILES = {
    "web.key": ("ddmail-web", "ddmail-backend"),
    "admin.key": ("ddmail-admin", "ddmail-backend"),
    "backend.key": ("ddmail-backend", "ddmail-keyhandler"),
    "dovecot.key": ("ddmail-keyhandler", "ddmail-auth"),
    "audit.key": ("ddmail-web", "ddmail-admin"),
}
# The hardening of the real units that bears on AppArmor (NoNewPrivileges changes how a
# profile may transition; PrivateTmp is where the services' temporary files go).
HARDENING = ("NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectSystem=strict", "ProtectHome=yes")

checks: list[dict[str, Any]] = []


def check(name: str, ok: bool, detail: object = "") -> bool:
    checks.append({"name": name, "ok": bool(ok), "detail": str(detail)[-3000:]})
    return ok


def run(*cmd: str, user: str | None = None, stdin: str | None = None) -> Any:
    if user is not None:
        cmd = ("setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *cmd)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, input=stdin)


def layout() -> None:
    run("groupadd", "--system", "ddmail")
    for user in USERS:
        run(
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            user,
        )
        if user.startswith("ddmail-"):
            run("usermod", "-aG", "ddmail", user)
    # Who may connect to whose socket (gunicorn makes them 0660): the callers join the
    # service's group here.
    for caller, service in (
        ("ddmail-web", "ddmail-backend"),
        ("ddmail-admin", "ddmail-backend"),
        ("ddmail-backend", "ddmail-keyhandler"),
    ):
        run("usermod", "-aG", service, caller)
    SECRETS.mkdir(parents=True, exist_ok=True)
    os.chown(SECRETS.parent, 0, 0)
    run("chgrp", "ddmail", str(SECRETS))
    SECRETS.chmod(0o750)
    for name, (owner, group) in SECRET_FILES.items():
        path = SECRETS / name
        path.write_text(secrets.token_hex(32) + "\n")
        run("chown", f"{owner}:{group}", str(path))
        path.chmod(0o640)
    master = SECRETS / "master.keys"
    run(
        PY,
        "-c",
        f"from ddmail_web.envelope import MasterKeys; MasterKeys.generate_file({str(master)!r})",
    )
    run("chown", "ddmail-web:ddmail-admin", str(master))
    master.chmod(0o640)
    for sub in ("sqlite", "mail", "backups", "keyhandler"):
        (STATE / sub).mkdir(parents=True, exist_ok=True)
    run("chown", "root:ddmail", str(STATE / "sqlite"))
    (STATE / "sqlite").chmod(0o2770)
    run("chown", "ddmail-keyhandler:ddmail-keyhandler", str(STATE / "keyhandler"))
    (STATE / "keyhandler").chmod(0o700)
    (STATE / "backups").chmod(0o700)
    MAILDIR_FILE.parent.mkdir(parents=True, exist_ok=True)
    MAILDIR_FILE.write_text("Subject: stored\n\nciphertext stand-in\n")
    run("chown", "-R", "vmail:vmail", str(STATE / "mail"))
    run("chmod", "-R", "go-rwx", str(STATE / "mail"))
    CONFIG.write_text(
        f"""[database]
url = "sqlite:///{DB}"

[backend]
socket = "/run/ddmail-backend/backend.sock"
mail_root = "{STATE / "mail"}"
operator_address = "operator@operator.invalid"
dns_nameservers = ["127.0.0.1"]

[keyhandler]
socket = "/run/ddmail-keyhandler/keyhandler.sock"
unlock_listen = "{UNLOCK[0]}:{UNLOCK[1]}"
argon2_memory_kib = 8192
argon2_time_cost = 1

[pgpstage]
socket = "/run/ddmail/pgpstage.sock"
dovecot_lmtp = "/run/dovecot/ddmail-lmtp"

[milter]
socket = "/run/ddmail-milter/milter.sock"

[web]
global_domain = "ddmail.test"
panel_url = "https://ddmail.test"
master_keys = "{master}"
argon2_memory_kib = 8192
argon2_time_cost = 1

[secrets]
"""
        + "".join(f'{n.split(".")[0]} = "{SECRETS / n}"\n' for n in SECRET_FILES)
    )
    run("chown", "root:ddmail", str(CONFIG))
    CONFIG.chmod(0o640)
    migrated = run(
        PY, "-c", f"from ddmail_common.migrate import upgrade; upgrade('sqlite:///{DB}')"
    )
    check("layout: database migrated (SQLite mode)", migrated.returncode == 0, migrated.stderr)
    run("chgrp", "ddmail", str(DB))
    DB.chmod(0o660)
    # The non-loopback address the keyhandler must not reach.
    run("ip", "link", "add", "dummy0", "type", "dummy")
    run("ip", "addr", "add", f"{OUTSIDE[0]}/24", "dev", "dummy0")
    run("ip", "link", "set", "dummy0", "up")


def start(unit: str, user: str, profile: str, command: list[str], *props: str) -> None:
    cmd = [
        "systemd-run",
        f"--unit={unit}",
        f"--property=AppArmorProfile={profile}",
        f"--property=User={user}",
        f"--property=Group={user}",
        "--property=SupplementaryGroups=ddmail",
        "--property=ReadWritePaths=/var/lib/ddmail",
    ]
    cmd += [f"--property={p}" for p in (*HARDENING, *props)]
    started = run(*cmd, *command)
    check(f"{unit}: started", started.returncode == 0, started.stderr)


def wait_for(path: str, seconds: float = 300) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.2)
    return False


def confinement(unit: str, expected: str) -> None:
    pid = run("systemctl", "show", "-P", "MainPID", unit).stdout.strip()
    label = Path(f"/proc/{pid}/attr/current").read_text().strip() if pid not in ("", "0") else ""
    check(f"{unit}: runs as {expected} (enforce)", label == f"{expected} (enforce)", label)


def client(caller: str, service_socket: str, service: str) -> Any:
    from ddmail_common.client import ServiceClient

    key = (SECRETS / f"{caller}.key").read_bytes().strip()
    return ServiceClient(caller, key, Path(service_socket), service)


def http_unix(path: str, target: str) -> tuple[int, str]:
    import http.client

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(path)

    conn = Conn("ddmail.test", timeout=30)
    conn.request("GET", target, headers={"Host": "ddmail.test", "X-Forwarded-Proto": "https"})
    resp = conn.getresponse()
    return resp.status, resp.read().decode(errors="replace")


def test_key_for(address: str) -> str:
    home = Path("/root/gpg-probe")
    home.mkdir(mode=0o700, exist_ok=True)
    gen = (
        "gpg",
        "--homedir",
        str(home),
        "--batch",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
        "--quick-gen-key",
        f"<{address}>",
        "ed25519",
        "cert",
        "never",
    )
    run(*gen)
    fpr = run("gpg", "--homedir", str(home), "--with-colons", "--list-keys", address).stdout
    fingerprint = next(line.split(":")[9] for line in fpr.splitlines() if line.startswith("fpr"))
    run(
        "gpg",
        "--homedir",
        str(home),
        "--batch",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
        "--quick-add-key",
        fingerprint,
        "cv25519",
        "encr",
        "never",
    )
    return str(run("gpg", "--homedir", str(home), "--armor", "--export", address).stdout)


def services() -> None:
    start(
        "ddmail-keyhandler",
        "ddmail-keyhandler",
        "ddmail-keyhandler",
        [str(BIN / "ddmail-keyhandler"), "--config", str(CONFIG)],
        "RuntimeDirectory=ddmail-keyhandler",
        "IPAddressDeny=any",
        "IPAddressAllow=localhost",
    )
    start(
        "ddmail-backend",
        "ddmail-backend",
        "ddmail-backend",
        [str(BIN / "ddmail-backend"), "--config", str(CONFIG)],
        "RuntimeDirectory=ddmail-backend",
    )
    start(
        "ddmail-web",
        "ddmail-web",
        "ddmail-web",
        [
            str(BIN / "ddmail-web"),
            "--config",
            str(CONFIG),
            "--bind",
            "unix:/run/ddmail-web/web.sock",
            "--workers",
            "2",
        ],
        "RuntimeDirectory=ddmail-web",
        "IPAddressDeny=any",
    )
    start(
        "ddmail-milter",
        "ddmail-milter",
        "ddmail-milter",
        [str(BIN / "ddmail-milter"), "--config", str(CONFIG)],
        "RuntimeDirectory=ddmail-milter",
        "SupplementaryGroups=postfix",
        "IPAddressDeny=any",
    )
    start(
        "ddmail-pgpstage",
        "ddmail-pgpstage",
        "ddmail-pgpstage",
        [str(BIN / "ddmail-pgpstage"), "--config", str(CONFIG)],
        "RuntimeDirectory=ddmail",
        "RuntimeDirectoryPreserve=yes",
        "SupplementaryGroups=postfix",
        "IPAddressDeny=any",
    )
    sockets = {
        "ddmail-keyhandler": "/run/ddmail-keyhandler/keyhandler.sock",
        "ddmail-backend": "/run/ddmail-backend/backend.sock",
        "ddmail-web": "/run/ddmail-web/web.sock",
        "ddmail-milter": "/run/ddmail-milter/milter.sock",
        "ddmail-pgpstage": "/run/ddmail/pgpstage.sock",
    }
    for unit, path in sockets.items():
        up = wait_for(path)
        status = run("systemctl", "status", "--no-pager", "-l", unit).stdout
        check(f"{unit}: listening on {path}", up, status)
        confinement(unit, unit)

    keyhandler = client("backend", sockets["ddmail-keyhandler"], "keyhandler")
    account = "a" + secrets.token_hex(8)
    address = "probe@ddmail.test"
    try:
        keyhandler.call("POST", "/v1/recovery-keys", {"account": account, "secret": "s" * 40})
        made = keyhandler.call(
            "POST",
            "/v1/keys",
            {"mailbox_id": secrets.token_hex(16), "address": address, "account": account},
        )
        check("keyhandler: mailbox key made and wrapped (argon2id, database)", "password" in made)
        token = (SECRETS / "dovecot.key").read_text().strip()
        import http.client

        conn = http.client.HTTPConnection(*UNLOCK, timeout=30)
        conn.request(
            "POST",
            "/v1/unlock",
            json.dumps({"user": address, "password": made["password"]}),
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        check("keyhandler: unlock answered on 127.0.0.1:10080", resp.status == 200, resp.status)
        key = test_key_for(address)
        uploaded = keyhandler.call("POST", "/v1/openpgp/keys", {"account": account, "key": key})
        check(
            "keyhandler: OpenPGP key judged by gpg (child profile)",
            "fingerprint" in json.dumps(uploaded),
            uploaded,
        )
    except Exception:
        check("keyhandler: real work", False, traceback.format_exc())

    admin_env = ("--config", str(CONFIG))
    added = run(
        "aa-exec",
        "-p",
        "ddmail-admin",
        "--",
        str(BIN / "ddmail"),
        "admin",
        "domain",
        "add",
        "ddmail.test",
        *admin_env,
        user="ddmail-admin",
    )
    check(
        "ddmail-admin: `ddmail admin domain add` through the backend",
        added.returncode == 0,
        added.stdout + added.stderr,
    )
    billing = run(
        "systemd-run",
        "--wait",
        "--collect",
        "--unit=ddmail-periodic",
        "--property=AppArmorProfile=ddmail-admin",
        "--property=User=ddmail-admin",
        "--property=Group=ddmail-admin",
        "--property=SupplementaryGroups=ddmail",
        "--property=ReadWritePaths=/var/lib/ddmail",
        *(f"--property={p}" for p in HARDENING),
        str(BIN / "ddmail"),
        "admin",
        "billing",
        "run",
        *admin_env,
    )
    check(
        "ddmail-admin: periodic `ddmail admin billing run` unit",
        billing.returncode == 0,
        billing.stdout + billing.stderr,
    )

    for target, want in (("/", 200), ("/register", 200)):
        try:
            status, body = http_unix(sockets["ddmail-web"], target)
            check(f"ddmail-web: GET {target} answered {want}", status == want, f"{status} {body}")
        except Exception:
            check(f"ddmail-web: GET {target}", False, traceback.format_exc())

    try:
        lmtp = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lmtp.settimeout(20)
        lmtp.connect(sockets["ddmail-pgpstage"])
        banner = lmtp.recv(200).decode(errors="replace")
        lmtp.sendall(b"QUIT\r\n")
        lmtp.close()
        check("ddmail-pgpstage: LMTP greeting on its socket", banner.startswith("220"), banner)
    except Exception:
        check("ddmail-pgpstage: LMTP greeting", False, traceback.format_exc())

    key = test_key_for(address)
    encrypt = (
        "from ddmail_keyhandler.pgpmime import encrypt_message\n"
        "import sys\n"
        "raw = b'From: a@example.org\\r\\nTo: probe@ddmail.test\\r\\n'\n"
        "raw += b'Subject: s\\r\\n\\r\\nhello\\r\\n'\n"
        "out = encrypt_message(raw, sys.stdin.read().encode())\n"
        "print('PGP' if b'BEGIN PGP MESSAGE' in out else 'PLAIN')\n"
    )
    encrypted = run(
        "systemd-run",
        "--wait",
        "--collect",
        "--pipe",
        "--quiet",
        "--property=AppArmorProfile=ddmail-pgpstage",
        "--property=User=ddmail-pgpstage",
        "--property=Group=ddmail-pgpstage",
        *(f"--property={p}" for p in HARDENING),
        PY,
        "-I",
        "-c",
        encrypt,
        stdin=key,
    )
    check(
        "ddmail-pgpstage: delivery encryption runs gpg in its child profile",
        encrypted.stdout.strip() == "PGP",
        encrypted.stdout + encrypted.stderr,
    )


PROBE = r"""
import ctypes, errno, json, socket, sys
ctypes.CDLL(None).prctl(15, b"aa-probe", 0, 0, 0)  # PR_SET_NAME: its denials are expected
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "allowed"
    except TimeoutError:
        out[name] = "ETIMEDOUT"
    except OSError as exc:
        out[name] = errno.errorcode.get(exc.errno, str(exc.errno))
def connect(family, kind, address, timeout=3):
    s = socket.socket(family, kind)
    s.settimeout(timeout)
    try:
        s.connect(address)
    finally:
        s.close()
attempt("inet_stream_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close())
attempt("inet_dgram_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close())
attempt("inet6_stream_socket", lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close())
attempt("unix_socket", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close())
tcp = (socket.AF_INET, socket.SOCK_STREAM)
attempt("connect_outside", lambda: connect(*tcp, (sys.argv[1], int(sys.argv[2]))))
attempt("connect_loopback", lambda: connect(*tcp, ("127.0.0.1", 10080)))
for path in sys.argv[3:]:
    attempt("read " + path, lambda: open(path, "rb").read())
print(json.dumps(out))
"""

READS = (
    str(MAILDIR_FILE),
    "/etc/ddmail/secrets/backend.key",
    "/etc/ddmail/secrets/dovecot.key",
    "/etc/ddmail/secrets/web.key",
    "/run/ddmail-keyhandler/keyhandler.sock",
    "/etc/shadow",
)


def probe(how: str, *prefix: str) -> dict[str, str]:
    done = run(*prefix, PY, "-I", "-c", PROBE, OUTSIDE[0], str(OUTSIDE[1]), *READS)
    try:
        result: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        check(f"probe {how} ran", False, done.stdout + done.stderr)
        return {}
    checks.append({"name": f"probe {how}", "ok": True, "detail": json.dumps(result)})
    return result


def readable_to_all() -> None:
    """The probes run as root without the capabilities that bypass file modes (the profiles
    grant none), so the files they try are made readable to all first: then only AppArmor can
    refuse. (The services have read their secrets by now; they refuse such modes at start.)"""
    for path in (*SECRETS.iterdir(), MAILDIR_FILE):
        path.chmod(0o644)
    for directory in (SECRETS, *MAILDIR_FILE.parents):
        if str(directory).startswith(("/etc/ddmail", str(STATE))):
            directory.chmod(directory.stat().st_mode | 0o005)


def listen_outside() -> None:
    server = socket.create_server(OUTSIDE)

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            conn.close()

    threading.Thread(target=serve, daemon=True).start()


def probes() -> None:
    readable_to_all()
    listen_outside()
    # Controls: root, unconfined, may do everything the confined probes may not.
    free = probe("unconfined (control)")
    check(
        "control: unconfined root reads a maildir file",
        free.get(f"read {MAILDIR_FILE}") == "allowed",
        free,
    )
    check(
        "control: unconfined root makes an inet datagram socket",
        free.get("inet_dgram_socket") == "allowed",
        free,
    )
    check(
        "control: unconfined TCP to the non-loopback address connects",
        free.get("connect_outside") == "allowed",
        free,
    )

    # As root, so that only AppArmor (not file modes) can refuse.
    kh = probe("aa-exec -p ddmail-keyhandler", "aa-exec", "-p", "ddmail-keyhandler", "--")
    check(
        "keyhandler: no inet datagram socket (no DNS)", kh.get("inet_dgram_socket") == "EACCES", kh
    )
    check("keyhandler: no IPv6 socket", kh.get("inet6_stream_socket") == "EACCES", kh)
    check("keyhandler: reads no maildir", kh.get(f"read {MAILDIR_FILE}") == "EACCES", kh)
    check(
        "keyhandler: reads no panel secret",
        kh.get("read /etc/ddmail/secrets/web.key") == "EACCES",
        kh,
    )
    check(
        "keyhandler: reads its own secret",
        kh.get("read /etc/ddmail/secrets/backend.key") == "allowed",
        kh,
    )
    check("keyhandler: reaches its loopback listener", kh.get("connect_loopback") == "allowed", kh)
    check(
        "keyhandler (profile alone): TCP to a non-loopback address is not the profile's to stop",
        kh.get("connect_outside") == "allowed",
        kh,
    )
    # TCP is the one inet family it keeps (the unlock listener); the unit's IPAddressDeny=any +
    # IPAddressAllow=localhost keeps it on loopback.
    unit = probe(
        "ddmail-keyhandler profile + IPAddressDeny=any/IPAddressAllow=localhost",
        "systemd-run",
        "--wait",
        "--collect",
        "--pipe",
        "--quiet",
        "--property=AppArmorProfile=ddmail-keyhandler",
        "--property=IPAddressDeny=any",
        "--property=IPAddressAllow=localhost",
    )
    check(
        "keyhandler unit: TCP to a non-loopback address refused",
        unit.get("connect_outside") in ("EPERM", "ETIMEDOUT"),
        unit,
    )
    check(
        "keyhandler unit: TCP to loopback allowed", unit.get("connect_loopback") == "allowed", unit
    )

    web = probe("aa-exec -p ddmail-web", "aa-exec", "-p", "ddmail-web", "--")
    check("web: no inet socket", web.get("inet_stream_socket") == "EACCES", web)
    check("web: no IPv6 socket", web.get("inet6_stream_socket") == "EACCES", web)
    check("web: reads no maildir", web.get(f"read {MAILDIR_FILE}") == "EACCES", web)
    for name in ("backend.key", "dovecot.key"):
        check(f"web: reads no {name}", web.get(f"read /etc/ddmail/secrets/{name}") == "EACCES", web)
    check(
        "web: no keyhandler socket",
        web.get("read /run/ddmail-keyhandler/keyhandler.sock") == "EACCES",
        web,
    )
    check(
        "web: reads its own secret", web.get("read /etc/ddmail/secrets/web.key") == "allowed", web
    )
    check("web: no /etc/shadow", web.get("read /etc/shadow") == "EACCES", web)

    for profile in ("ddmail-pgpstage", "ddmail-milter", "ddmail-admin"):
        got = probe(f"aa-exec -p {profile}", "aa-exec", "-p", profile, "--")
        check(f"{profile}: no inet socket", got.get("inet_stream_socket") == "EACCES", got)
        check(f"{profile}: reads no maildir", got.get(f"read {MAILDIR_FILE}") == "EACCES", got)


def denials() -> list[str]:
    log = run("journalctl", "-k", "-b", "--no-pager", "-o", "cat").stdout
    return [line for line in log.splitlines() if 'apparmor="DENIED"' in line]


def greeting(port: int, program: str) -> tuple[str, set[str]]:
    """The server's greeting, and the labels of `program` while the connection is open (a
    Dovecot login process serves one connection and exits)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
                return conn.recv(200).decode(errors="replace"), labels(program)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def labels(program: str) -> set[str]:
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            if os.readlink(proc / "exe") == program:
                found.add((proc / "attr" / "current").read_text().strip())
        except OSError:
            continue
    return found


GPG_STACK = r"""
import os, subprocess, sys
home = "/tmp/ddmail-pgp-probe"
os.makedirs(home, mode=0o700, exist_ok=True)
with open(home + "/key.asc", "w") as f:
    f.write(sys.stdin.read())
for source in (home + "/key.asc", "/etc/ddmail/secrets/backend.key"):
    command = ["gpg", "--homedir", home, "--batch", "--no-autostart", "--import", source]
    done = subprocess.run(command,
                          capture_output=True, text=True)
    print(source, "|", " ".join(done.stderr.split()))
"""


def gpg_stacked() -> None:
    """gpg run by the keyhandler (unit hardening: NoNewPrivileges=yes) is in the stacked child
    profile, not just in the keyhandler's: the child may import a key from its home but may not
    read the keyhandler's own secret, which the keyhandler's profile alone would allow."""
    key = test_key_for("probe@ddmail.test")
    done = run(
        "systemd-run",
        "--wait",
        "--collect",
        "--pipe",
        "--quiet",
        "--property=AppArmorProfile=ddmail-keyhandler",
        "--property=NoNewPrivileges=yes",
        "--property=PrivateTmp=yes",
        PY,
        "-I",
        "-c",
        GPG_STACK,
        stdin=key,
    )
    lines = done.stdout.splitlines()
    check(
        "gpg under the keyhandler imports a key from its home",
        any(line.startswith("/tmp/") and "imported: 1" in line for line in lines),
        done.stdout + done.stderr,
    )
    check(
        "gpg under the keyhandler cannot read the keyhandler's secret (stacked child)",
        any(line.startswith("/etc/") and "Permission denied" in line for line in lines),
        done.stdout + done.stderr,
    )


def daemons() -> None:
    """The path-attached profiles, on the packages' default configuration (not DDMail's:
    that is the full deployment's test): they attach, and the daemons answer."""
    # Postfix as DDMail configures it where it matters here: no local alias lookups, no
    # chroot, the certificate where the certificates role puts it.
    tls = Path("/etc/ssl/ddmail")
    tls.mkdir(parents=True, exist_ok=True)
    shutil.copy("/etc/ssl/certs/ssl-cert-snakeoil.pem", tls / "mail.pem")
    shutil.copy("/etc/ssl/private/ssl-cert-snakeoil.key", tls / "mail.key")
    run(
        "postconf",
        "-e",
        "alias_maps=",
        "alias_database=",
        "mydestination=",
        "local_recipient_maps=",
        f"smtpd_tls_cert_file={tls / 'mail.pem'}",
        f"smtpd_tls_key_file={tls / 'mail.key'}",
    )
    run("postconf", "-F", "smtp/inet/chroot=n")
    for command in (("/usr/sbin/nginx",), ("/usr/sbin/dovecot",), ("postfix", "start")):
        # They fork into the background and keep inherited pipes: no output captured.
        started = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=300,
        )
        check(f"{command[0]} started", started.returncode == 0, started.returncode)
    try:
        answer = run(
            PY,
            "-I",
            "-c",
            "import urllib.request as u; print(u.urlopen('http://127.0.0.1/', timeout=30).status)",
        ).stdout.strip()
        check("nginx answers under its profile", answer == "200", answer)
        check(
            "nginx runs as ddmail-nginx",
            labels("/usr/sbin/nginx") == {"ddmail-nginx (enforce)"},
            labels("/usr/sbin/nginx"),
        )
        imap, login = greeting(143, "/usr/lib/dovecot/imap-login")
        check("Dovecot imap-login answers under its profile", imap.startswith("* OK"), imap)
        check(
            "imap-login runs as ddmail-dovecot-imap-login",
            login == {"ddmail-dovecot-imap-login (enforce)"},
            login,
        )
        check(
            "Dovecot auth runs as ddmail-dovecot-auth",
            labels("/usr/lib/dovecot/auth") == {"ddmail-dovecot-auth (enforce)"},
            labels("/usr/lib/dovecot/auth"),
        )
        smtp, smtpd = greeting(25, "/usr/lib/postfix/sbin/smtpd")
        check("Postfix smtpd answers under its profile", smtp.startswith("220"), smtp)
        check(
            "smtpd runs as ddmail-postfix-smtpd",
            smtpd == {"ddmail-postfix-smtpd (enforce)"},
            smtpd,
        )
    except Exception:
        check("daemons", False, traceback.format_exc())


def main() -> None:
    loaded = Path("/sys/kernel/security/apparmor/profiles")
    text = loaded.read_text() if loaded.exists() else ""
    for name in PROFILES:
        check(f"profile {name} loaded in enforce mode", f"{name} (enforce)" in text)
    try:
        layout()
        services()
        probes()
        gpg_stacked()
        daemons()
    except Exception:
        check("check script", False, traceback.format_exc())
    time.sleep(1)
    denied = denials()
    unexpected = [line for line in denied if 'comm="aa-probe"' not in line]
    check(
        "no apparmor DENIED line from the services' own work", not unexpected, "\n".join(unexpected)
    )
    journal = run("journalctl", "-b", "--no-pager", "-u", "ddmail-*").stdout
    RESULT.write_text(json.dumps({"checks": checks, "denied": denied, "journal": journal[-20000:]}))


if __name__ == "__main__":
    main()

"""DDMail's AppArmor profiles (apparmor/) compile cleanly and say what the security review
requires, checked offline: apparmor_parser compiles each one (no kernel needed) with the
warnings that matter turned into errors, and Debian's python3-apparmor answers what each
profile allows and denies (tests/unit/apparmor_semantics.py, run with /usr/bin/python3).
The real kernel's enforcement is checked in the deployed VM (tests/deploy/test_vm.py)."""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PROFILE_DIR = REPO / "apparmor"
PROFILES = sorted(p for p in PROFILE_DIR.iterdir() if p.is_file())
HELPER = Path(__file__).with_name("apparmor_semantics.py")
# ops-testing-notes §2: --warn=all --Werror always fails without a kernel ("ptrace rules not
# enforced"), so these are the classes that can be made errors offline.
WARNINGS = ("abi", "deprecated", "dangerous", "format", "unexpected", "rule-downgraded")

DDMAIL_PROCESSES = {
    "ddmail-web",
    "ddmail-backend",
    "ddmail-keyhandler",
    "ddmail-pgpstage",
    "ddmail-milter",
    "ddmail-tlsrpt",
    "ddmail-admin",
    "ddmail-backup",
    "ddmail-zone-sign",
}
DAEMONS = {
    "ddmail-nginx": "/usr/sbin/nginx",
    "ddmail-postfix-smtpd": "/usr/lib/postfix/sbin/smtpd",
    "ddmail-dovecot-auth": "/usr/lib/dovecot/auth",
    "ddmail-dovecot-imap-login": "/usr/lib/dovecot/imap-login",
    # The filters (clamd has Debian's own profile, usr.sbin.clamd). /usr/bin/redis-server is a
    # symlink: the kernel attaches by the file executed.
    "ddmail-rspamd": "/usr/bin/rspamd",
    "ddmail-redis": "/usr/bin/redis-check-rdb",
    # Debian's postfix-mta-sts-resolver (a Python script; also named by its unit).
    "ddmail-mta-sts-daemon": "/usr/bin/mta-sts-daemon",
}
MAIL = "/var/lib/ddmail/mail/example.org/alice/Maildir/new/1700000000.M1P1.host"
MAIL_DIR = "/var/lib/ddmail/mail/example.org/alice/Maildir/new/"
KEYHANDLER_STATE = "/var/lib/ddmail/keyhandler/gpg/pubring.kbx"
DKIM_KEY = "/var/lib/ddmail/dkim/example.org.ddm1.key"
# The keys of the onion service and the I2P destination (roles tor and i2pd; issue 12).
ONION_KEY = "/var/lib/tor/ddmail/hs_ed25519_secret_key"
I2P_KEYS = "/var/lib/i2pd/ddmail.dat"
DKIM_MAP = "/var/lib/ddmail/dkim/selectors.map"
SECRET = "/etc/ddmail/secrets/{}"
PG_SOCKET = "/var/run/postgresql/.s.PGSQL.5432"
INET = [
    ("inet", "stream"),
    ("inet", "dgram"),
    ("inet", "raw"),
    ("inet6", "stream"),
    ("inet6", "dgram"),
]


def parser(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apparmor_parser", "-I", str(PROFILE_DIR), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("profile", PROFILES, ids=[p.name for p in PROFILES])
def test_profile_compiles_with_warnings_as_errors(profile: Path) -> None:
    flags = [f for w in WARNINGS for f in (f"--warn={w}", f"--Werror={w}")]
    done = parser("-Q", "-K", *flags, profile)
    assert done.returncode == 0, done.stderr


def test_the_compile_check_fails_on_a_broken_profile(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.write_text((PROFILE_DIR / "ddmail-web").read_text().replace("r,\n", "rr x,\n", 1))
    assert parser("-Q", "-K", broken).returncode != 0


@cache
def names() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for profile in PROFILES:
        for name in parser("-N", profile).stdout.split():
            found[name] = profile
    return found


def test_every_process_and_daemon_has_an_enforce_mode_profile() -> None:
    assert set(names()) >= DDMAIL_PROCESSES | set(DAEMONS)
    for profile in PROFILES:
        text = flattened(profile)
        assert not re.search(r"flags=\([^)]*complain", text), f"{profile.name} is in complain mode"


def test_daemon_profiles_attach_to_their_binaries() -> None:
    for name, binary in DAEMONS.items():
        text = names()[name].read_text()
        assert re.search(rf"^profile {re.escape(name)} {re.escape(binary)} ", text, re.M), name


def test_no_profile_runs_anything_unconfined() -> None:
    for profile in PROFILES:
        rules = [line.split("#")[0] for line in flattened(profile).splitlines()]
        assert not [r for r in rules if re.search(r"\b[pPcC]?[uU]x\b", r)], profile.name


def test_stacked_exec_targets_name_existing_profiles() -> None:
    """A child stacked on its parent is written "Pix -> &parent//child" (measured in the VM on
    Debian 12's kernel 6.1): for a stack target the kernel first looks for a profile attached
    to the program's path and only with "ix" falls back to the current profile to stack on;
    "Cx -> &child" compiles to "parent//&child", which it never finds."""
    for profile in PROFILES:
        rules = [line.split("#")[0] for line in profile.read_text().splitlines()]
        stacking = [r for r in rules if re.search(r"->\s*&", r)]
        assert all(re.search(r"\sPix\s*->\s*&", r) for r in stacking), (profile.name, stacking)
        targets = [m.group(1) for r in stacking for m in [re.search(r"->\s*&(\S+),", r)] if m]
        assert all(t in names() for t in targets), (profile.name, targets)


def test_every_unit_names_an_existing_profile() -> None:
    units = sorted((REPO / "ansible" / "roles").glob("*/templates/*.service*"))
    named = {
        m.group(1): unit.name
        for unit in units
        for m in re.finditer(r"^AppArmorProfile=-?(\S+)$", unit.read_text(), re.M)
    }
    missing = {name: unit for name, unit in named.items() if name not in names()}
    assert not missing, f"units name profiles that do not exist: {missing}"


@cache
def flattened(profile: Path) -> str:
    done = parser("-p", profile)
    assert done.returncode == 0, done.stderr
    return done.stdout


def ask(paths: list[tuple[str, str, str, bool]], networks: list[tuple[str, str, str]]) -> Any:
    questions = {
        "files": {p.name: flattened(p) for p in PROFILES},
        "paths": paths,
        "networks": networks,
    }
    done = subprocess.run(
        ["/usr/bin/python3", str(HELPER)],
        input=json.dumps(questions),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# (profile, path, perms, owner) -> "allow" (allowed, not denied) or "deny" (an explicit deny
# rule: it wins over any allow rule added later, and keeps the refusal out of the log) or
# "none" (neither: refused, and logged).
PATH_RULES: list[tuple[str, str, str, str]] = [
    # keyhandler: its own secrets and sockets; no maildir, no other party's secret.
    ("ddmail-keyhandler", SECRET.format("backend.key"), "r", "allow"),
    ("ddmail-keyhandler", SECRET.format("dovecot.key"), "r", "allow"),
    ("ddmail-keyhandler", "/run/ddmail-keyhandler/keyhandler.sock", "rw", "allow"),
    ("ddmail-keyhandler", PG_SOCKET, "rw", "allow"),
    ("ddmail-keyhandler", MAIL, "r", "deny"),
    ("ddmail-keyhandler", MAIL_DIR, "r", "deny"),
    ("ddmail-keyhandler", SECRET.format("web.key"), "r", "deny"),
    ("ddmail-keyhandler", SECRET.format("admin.key"), "r", "deny"),
    ("ddmail-keyhandler//gpg", MAIL, "r", "deny"),
    ("ddmail-keyhandler//gpg", SECRET.format("backend.key"), "r", "deny"),
    # web: the backend and the database; never maildirs, the keyhandler, others' secrets.
    ("ddmail-web", SECRET.format("web.key"), "r", "allow"),
    ("ddmail-web", "/run/ddmail-backend/backend.sock", "rw", "allow"),
    ("ddmail-web", "/run/ddmail-web/web.sock", "rw", "allow"),
    ("ddmail-web", PG_SOCKET, "rw", "allow"),
    ("ddmail-web", MAIL, "r", "deny"),
    ("ddmail-web", MAIL_DIR, "r", "deny"),
    ("ddmail-web", KEYHANDLER_STATE, "r", "deny"),
    ("ddmail-web", "/run/ddmail-keyhandler/keyhandler.sock", "rw", "deny"),
    ("ddmail-web", SECRET.format("backend.key"), "r", "deny"),
    ("ddmail-web", SECRET.format("dovecot.key"), "r", "deny"),
    ("ddmail-web", SECRET.format("admin.key"), "r", "deny"),
    ("ddmail-web", "/var/lib/ddmail/backups/ddmail-20260101T000000Z.tar.gpg", "r", "deny"),
    # backend: lists and erases maildirs, never reads a message.
    ("ddmail-backend", MAIL_DIR, "r", "allow"),
    ("ddmail-backend", MAIL, "w", "allow"),
    ("ddmail-backend", MAIL, "r", "none"),
    ("ddmail-backend", KEYHANDLER_STATE, "r", "deny"),
    ("ddmail-backend", SECRET.format("dovecot.key"), "r", "deny"),
    ("ddmail-backend", SECRET.format("tlsrpt.key"), "r", "allow"),
    # DKIM keys (DN 38): the backend creates and deletes them but never reads one back; the
    # panel, the operator's periodic job, the other services and the backup's gpg never see them.
    ("ddmail-backend", DKIM_KEY, "w", "allow"),
    ("ddmail-backend", DKIM_KEY, "r", "none"),
    ("ddmail-backend", DKIM_MAP, "rw", "allow"),
    ("ddmail-web", DKIM_KEY, "r", "deny"),
    ("ddmail-admin", DKIM_KEY, "r", "deny"),
    ("ddmail-keyhandler", DKIM_KEY, "r", "deny"),
    ("ddmail-milter", DKIM_KEY, "r", "deny"),
    ("ddmail-pgpstage", DKIM_KEY, "r", "deny"),
    ("ddmail-backup", DKIM_KEY, "r", "allow"),
    ("ddmail-backup//tar", DKIM_KEY, "r", "allow"),
    ("ddmail-backup//gpg", DKIM_KEY, "r", "deny"),
    ("ddmail-backup", "/var/lib/ddmail/dnssec/example.org.ksk.pem", "r", "allow"),
    ("ddmail-backup//tar", "/var/lib/ddmail/dnssec/example.org.ksk.pem", "r", "allow"),
    # the stage, the milter and the periodic job: no maildir; the first two no secret at all.
    ("ddmail-pgpstage", "/run/dovecot/ddmail-lmtp", "rw", "allow"),
    ("ddmail-pgpstage", MAIL, "r", "deny"),
    ("ddmail-pgpstage", SECRET.format("backend.key"), "r", "deny"),
    ("ddmail-pgpstage//gpg", MAIL, "r", "deny"),
    ("ddmail-milter", "/run/ddmail-milter/milter.sock", "rw", "allow"),
    ("ddmail-milter", MAIL, "r", "deny"),
    ("ddmail-milter", SECRET.format("web.key"), "r", "deny"),
    # the TLS report parser: its socket, the backend's, its own secret; nothing else.
    ("ddmail-tlsrpt", "/run/ddmail-tlsrpt/tlsrpt.sock", "rw", "allow"),
    ("ddmail-tlsrpt", "/run/ddmail-backend/backend.sock", "rw", "allow"),
    ("ddmail-tlsrpt", SECRET.format("tlsrpt.key"), "r", "allow"),
    ("ddmail-tlsrpt", SECRET.format("backend.key"), "r", "deny"),
    ("ddmail-tlsrpt", SECRET.format("admin.key"), "r", "deny"),
    ("ddmail-tlsrpt", PG_SOCKET, "rw", "deny"),
    ("ddmail-tlsrpt", MAIL, "r", "deny"),
    ("ddmail-tlsrpt", DKIM_KEY, "r", "deny"),
    ("ddmail-admin", SECRET.format("admin.key"), "r", "allow"),
    # The zone signer: its keys and zone files, the operator's secret; nothing else.
    ("ddmail-zone-sign", "/var/lib/ddmail/dnssec/example.org.ksk.pem", "w", "allow"),
    ("ddmail-zone-sign", "/var/lib/ddmail/zones/example.org.zone", "w", "allow"),
    ("ddmail-zone-sign", SECRET.format("admin.key"), "r", "allow"),
    ("ddmail-zone-sign", "/etc/passwd", "r", "allow"),
    ("ddmail-zone-sign", SECRET.format("backend.key"), "r", "deny"),
    ("ddmail-zone-sign", "/etc/ssl/ddmail/mail.key", "r", "deny"),
    ("ddmail-zone-sign", "/etc/ssl/ddmail/mail.pem.next", "r", "allow"),
    ("ddmail-zone-sign", MAIL, "r", "deny"),
    ("ddmail-zone-sign", DKIM_KEY, "r", "deny"),
    ("ddmail-admin", MAIL, "r", "deny"),
    ("ddmail-admin", SECRET.format("backend.key"), "r", "deny"),
    # backup: reads the state a restore needs, writes only the backup directory.
    ("ddmail-backup", MAIL, "r", "allow"),
    ("ddmail-backup", SECRET.format("backend.key"), "r", "allow"),
    ("ddmail-backup", "/var/lib/ddmail/backups/ddmail-20260101T000000Z.tar.gpg", "w", "allow"),
    ("ddmail-backup", MAIL, "w", "none"),
    ("ddmail-backup//gpg", SECRET.format("backend.key"), "r", "deny"),
    # the onion service's and the I2P destination's keys (roles tor, i2pd): read, never written.
    ("ddmail-backup", ONION_KEY, "r", "allow"),
    ("ddmail-backup//tar", ONION_KEY, "r", "allow"),
    ("ddmail-backup", ONION_KEY, "w", "none"),
    ("ddmail-backup//gpg", ONION_KEY, "r", "deny"),
    ("ddmail-backup//pg_dump", ONION_KEY, "r", "deny"),
    ("ddmail-backup", I2P_KEYS, "r", "allow"),
    ("ddmail-backup//tar", I2P_KEYS, "r", "allow"),
    ("ddmail-backup", I2P_KEYS, "w", "none"),
    ("ddmail-backup//gpg", I2P_KEYS, "r", "deny"),
    ("ddmail-backup//pg_dump", I2P_KEYS, "r", "deny"),
    # the daemons: no DDMail state beyond what each needs.
    ("ddmail-nginx", "/run/ddmail-web/web.sock", "rw", "allow"),
    ("ddmail-nginx", MAIL, "r", "deny"),
    ("ddmail-nginx", SECRET.format("web.key"), "r", "deny"),
    ("ddmail-postfix-smtpd", "/run/ddmail-milter/milter.sock", "rw", "allow"),
    ("ddmail-postfix-smtpd", "/run/dovecot/auth-postfix", "rw", "allow"),
    ("ddmail-postfix-smtpd", "/run/rspamd/milter.sock", "rw", "allow"),
    ("ddmail-postfix-smtpd", MAIL, "r", "deny"),
    ("ddmail-dovecot-auth", SECRET.format("dovecot.key"), "r", "allow"),
    ("ddmail-dovecot-auth", MAIL, "r", "deny"),
    ("ddmail-dovecot-auth", SECRET.format("backend.key"), "r", "deny"),
    ("ddmail-dovecot-imap-login", MAIL, "r", "deny"),
    ("ddmail-dovecot-imap-login", SECRET.format("dovecot.key"), "r", "deny"),
    # the filters: their sockets and state; no maildir, no secret, no database, no config.
    ("ddmail-rspamd", "/run/rspamd/milter.sock", "rw", "allow"),
    ("ddmail-rspamd", "/run/redis/redis-server.sock", "rw", "allow"),
    ("ddmail-rspamd", "/run/clamav/clamd.ctl", "rw", "allow"),
    ("ddmail-rspamd", "/var/lib/rspamd/stats.ucl", "w", "allow"),
    ("ddmail-rspamd", MAIL, "r", "deny"),
    ("ddmail-rspamd", SECRET.format("backend.key"), "r", "deny"),
    ("ddmail-rspamd", "/etc/ddmail/ddmail.toml", "r", "deny"),
    ("ddmail-rspamd", PG_SOCKET, "rw", "deny"),
    ("ddmail-redis", "/var/lib/redis/dump.rdb", "w", "allow"),
    ("ddmail-redis", "/run/redis/redis-server.sock", "rw", "allow"),
    ("ddmail-redis", MAIL, "r", "deny"),
    ("ddmail-redis", SECRET.format("dovecot.key"), "r", "deny"),
    # the MTA-STS resolver: its config and policy cache; nothing of DDMail's.
    ("ddmail-mta-sts-daemon", "/etc/mta-sts-daemon.yml", "r", "allow"),
    ("ddmail-mta-sts-daemon", "/var/lib/mta-sts/cache.db", "rw", "allow"),
    ("ddmail-mta-sts-daemon", "/etc/mta-sts-daemon.yml", "w", "none"),
    ("ddmail-mta-sts-daemon", MAIL, "r", "deny"),
    ("ddmail-mta-sts-daemon", SECRET.format("backend.key"), "r", "deny"),
    ("ddmail-mta-sts-daemon", "/etc/ddmail/ddmail.toml", "r", "deny"),
    ("ddmail-mta-sts-daemon", "/etc/ssl/ddmail/mail.key", "r", "deny"),
    ("ddmail-mta-sts-daemon", DKIM_KEY, "r", "deny"),
    ("ddmail-mta-sts-daemon", PG_SOCKET, "rw", "deny"),
    ("ddmail-mta-sts-daemon", "/usr/bin/", "r", "deny"),  # sys.path[0]: nothing to import
]

# Which inet families each DDMail process may use at all (AppArmor 3.0 cannot name addresses).
INET_ALLOWED = {
    "ddmail-web": set(),
    # The unlock listener on 127.0.0.1:10080; the unit keeps it on loopback (IPAddressDeny).
    "ddmail-keyhandler": {("inet", "stream")},
    "ddmail-keyhandler//gpg": set(),
    "ddmail-pgpstage": set(),
    "ddmail-pgpstage//gpg": set(),
    "ddmail-milter": set(),
    "ddmail-tlsrpt": set(),
    "ddmail-admin": set(),
    "ddmail-backup": set(),
    "ddmail-backup//gpg": set(),
    "ddmail-backup//tar": set(),
    "ddmail-backup//pg_dump": set(),
    "ddmail-zone-sign": set(),
    # Redis: a unix socket only (port 0).
    "ddmail-redis": set(),
    # rspamd: DNS (SPF, DKIM, DMARC, block lists) and HTTPS for its rule maps.
    "ddmail-rspamd": {
        ("inet", "stream"),
        ("inet", "dgram"),
        ("inet6", "stream"),
        ("inet6", "dgram"),
    },
    # DNS to Unbound, HTTPS to any destination's policy host, the socketmap on loopback.
    "ddmail-mta-sts-daemon": {
        ("inet", "stream"),
        ("inet", "dgram"),
        ("inet6", "stream"),
        ("inet6", "dgram"),
    },
    # DNS for domain verification.
    "ddmail-backend": {
        ("inet", "stream"),
        ("inet", "dgram"),
        ("inet6", "stream"),
        ("inet6", "dgram"),
    },
}


@cache
def answers() -> Any:
    paths = [(p, path, perms, False) for p, path, perms, _ in PATH_RULES]
    networks = [(p, d, t) for p in INET_ALLOWED for d, t in INET]
    return ask(paths, networks)


def test_the_library_sees_every_profile_and_child() -> None:
    assert set(answers()["profiles"]) >= set(INET_ALLOWED) | set(DAEMONS)


@pytest.mark.parametrize("rule", PATH_RULES, ids=[f"{r[0]} {r[2]} {r[1]}" for r in PATH_RULES])
def test_path_rule(rule: tuple[str, str, str, str]) -> None:
    got = answers()["paths"][PATH_RULES.index(rule)]
    verdict = "deny" if got["denied"] else "allow" if got["allowed"] else "none"
    assert verdict == rule[3], got


@pytest.mark.parametrize("profile", sorted(INET_ALLOWED))
def test_inet_families(profile: str) -> None:
    got = answers()
    networks = [(p, d, t) for p in INET_ALLOWED for d, t in INET]
    for (name, domain, kind), verdict in zip(networks, got["networks"], strict=True):
        if name != profile:
            continue
        allowed = verdict["allowed"] and not verdict["denied"]
        assert allowed == ((domain, kind) in INET_ALLOWED[profile]), (domain, kind, verdict)
    # Nothing beyond unix and the families above (no netlink, packet, raw, ...).
    families = {rule.split()[0] for rule in got["network_allows"][profile]}
    expected = {"unix"} | {d for d, _ in INET_ALLOWED[profile]}
    if profile in ("ddmail-backend", "ddmail-rspamd", "ddmail-mta-sts-daemon"):
        expected.add("netlink")  # the nameservice abstraction: glibc's address configuration
    assert families <= expected, families


def test_keyhandler_and_web_deny_inet_explicitly() -> None:
    got = answers()
    networks = [(p, d, t) for p in INET_ALLOWED for d, t in INET]
    for (name, domain, kind), verdict in zip(networks, got["networks"], strict=True):
        if name == "ddmail-web" or (
            name == "ddmail-keyhandler" and (domain, kind) != ("inet", "stream")
        ):
            assert verdict["denied"], (name, domain, kind)


def test_the_ansible_role_installs_every_profile_and_abstraction() -> None:
    defaults = (REPO / "ansible" / "roles" / "apparmor" / "defaults" / "main.yml").read_text()

    def listed(key: str) -> set[str]:
        block = re.search(rf"^{key}:\n((?:  - .*\n)+)", defaults, re.M)
        assert block, key
        return set(re.findall(r"^  - (\S+)$", block.group(1), re.M))

    assert listed("apparmor_profiles") == {p.name for p in PROFILES}
    abstractions = {p.name for p in (PROFILE_DIR / "abstractions").iterdir()}
    assert listed("apparmor_abstractions") == abstractions

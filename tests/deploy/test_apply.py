"""After the playbook ran into a fresh Debian 12 rootfs: the second run changed nothing, each
daemon accepts its own configuration, the units pass systemd's checks, and every secret belongs
to exactly the processes the deployment layout names."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.deploy.chroot import in_chroot
from tests.deploy.conftest import AppliedRootfs
from tests.systemd_security import DDMAIL_SERVICES, DDMAIL_UNITS, MAX_EXPOSURE, exposure

# path: (owner, group, mode), docs/architecture.md "deployment layout"
LAYOUT = {
    "/etc/ddmail/ddmail.toml": ("root", "ddmail", "640"),
    "/etc/ddmail/secrets": ("root", "ddmail", "750"),
    "/etc/ddmail/secrets/web.key": ("ddmail-web", "ddmail-backend", "640"),
    "/etc/ddmail/secrets/admin.key": ("ddmail-admin", "ddmail-backend", "640"),
    "/etc/ddmail/secrets/backend.key": ("ddmail-backend", "ddmail-keyhandler", "640"),
    "/etc/ddmail/secrets/dovecot.key": ("ddmail-keyhandler", "ddmail-auth", "640"),
    "/etc/ddmail/secrets/audit.key": ("ddmail-web", "ddmail-admin", "640"),
    "/etc/ddmail/secrets/master.keys": ("ddmail-web", "ddmail-admin", "640"),
    "/var/lib/ddmail/mail": ("vmail", "vmail", "2770"),
    "/var/lib/ddmail/backups": ("root", "root", "700"),
    "/etc/ssl/ddmail/mail.key": ("root", "root", "600"),
    "/opt/ddmail/venv/bin/python": ("root", "root", "777"),  # a symlink
    "/opt/ddmail/venv": ("root", "root", "755"),
}


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_the_first_run_applied_everything(applied_rootfs: AppliedRootfs) -> None:
    counts = applied_rootfs.first.counts
    assert counts["failed"] == 0 and counts["unreachable"] == 0
    assert counts["changed"] > 0


def test_the_second_run_changes_nothing(applied_rootfs: AppliedRootfs) -> None:
    counts = applied_rootfs.second.counts
    changed = [
        line for line in applied_rootfs.second.output.splitlines() if line.startswith("changed:")
    ]
    assert counts["changed"] == 0, changed
    assert counts["failed"] == 0 and counts["unreachable"] == 0


def test_postfix_accepts_its_configuration(applied_rootfs: AppliedRootfs) -> None:
    assert ok(in_chroot(applied_rootfs.root, "postfix", "check")) == ""
    maps = ok(in_chroot(applied_rootfs.root, "postconf", "-h", "virtual_mailbox_domains"))
    assert maps.strip() == "proxy:pgsql:/etc/postfix/sql-domains.cf"


def test_tls_reports_are_copied_to_their_parser(applied_rootfs: AppliedRootfs) -> None:
    """TLS-RPT (DN 41): Postfix adds the blind copy of tlsrpt@ mail and routes it to the
    socket of ddmail-tlsrpt, whose unit starts at boot."""
    root = applied_rootfs.root
    bcc = ok(in_chroot(root, "postconf", "-h", "recipient_bcc_maps")).strip()
    assert bcc == "proxy:pgsql:/etc/postfix/sql-tlsrpt.cf"
    route = "inline:{tlsrpt.ddmail.invalid=lmtp:unix:/run/ddmail-tlsrpt/tlsrpt.sock}"
    assert route in ok(in_chroot(root, "postconf", "-h", "transport_maps"))
    owner = ok(in_chroot(root, "stat", "-c", "%U %G %a", "/etc/postfix/sql-tlsrpt.cf")).split()
    assert owner == ["root", "postfix", "640"]
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert (wants / "ddmail-tlsrpt.service").is_symlink()


def test_dovecot_accepts_its_configuration(applied_rootfs: AppliedRootfs) -> None:
    config = ok(in_chroot(applied_rootfs.root, "doveconf", "-n"))
    assert "mail_home = /var/lib/ddmail/mail/%Ld/%Ln" in config
    assert "ssl = required" in config


def test_nginx_accepts_its_configuration(applied_rootfs: AppliedRootfs) -> None:
    ok(in_chroot(applied_rootfs.root, "nginx", "-t"))
    sites = sorted(p.name for p in (applied_rootfs.root / "etc/nginx/sites-enabled").iterdir())
    assert sites == ["ddmail-http.conf", "ddmail-panel.conf"]


def test_the_ddmail_config_is_valid_where_it_is_installed(applied_rootfs: AppliedRootfs) -> None:
    ok(
        in_chroot(
            applied_rootfs.root,
            "/opt/ddmail/venv/bin/python",
            "-m",
            "ddmail_common.config",
            "/etc/ddmail/ddmail.toml",
        )
    )


def test_the_firewall_ruleset_parses_and_opens_only_the_service_ports(
    applied_rootfs: AppliedRootfs,
) -> None:
    ok(in_chroot(applied_rootfs.root, "nft", "-c", "-f", "/etc/nftables.conf"))
    rules = (applied_rootfs.root / "etc/nftables.conf").read_text()
    assert re.findall(r"tcp dport \{ ([0-9, ]+) \} ct state new accept", rules) == [
        "22, 25, 80, 443, 465, 587, 993"
    ]
    wants = applied_rootfs.root / "etc/systemd/system/sysinit.target.wants/nftables.service"
    assert wants.is_symlink()


def test_the_units_pass_systemd_analyze_verify(applied_rootfs: AppliedRootfs) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={applied_rootfs.root}", *DDMAIL_UNITS],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # verify exits 0 even for lines it ignores: any message about a DDMail unit is a failure.
    assert result.returncode == 0, result.stderr
    assert "ddmail-" not in result.stderr, result.stderr


@pytest.mark.parametrize("service", DDMAIL_SERVICES)
def test_each_installed_service_is_rated_ok_or_better(
    applied_rootfs: AppliedRootfs, service: str
) -> None:
    assert exposure(Path(service), root=applied_rootfs.root) <= MAX_EXPOSURE


def test_the_units_start_at_boot(applied_rootfs: AppliedRootfs) -> None:
    system = applied_rootfs.root / "etc/systemd/system"
    for unit in DDMAIL_SERVICES[:5]:
        assert (system / "multi-user.target.wants" / unit).is_symlink(), unit
    for timer in ("ddmail-periodic.timer", "ddmail-backup.timer"):
        assert (system / "timers.target.wants" / timer).is_symlink(), timer
    assert (system / "paths.target.wants" / "ddmail-postfix-reload.path").is_symlink()


def test_secrets_and_state_have_the_layouts_owners_and_modes(
    applied_rootfs: AppliedRootfs,
) -> None:
    found = ok(in_chroot(applied_rootfs.root, "stat", "-c", "%n %U %G %a", *LAYOUT))
    actual = {path: tuple(rest) for path, *rest in (line.split() for line in found.splitlines())}
    assert actual == LAYOUT


def test_secrets_are_long_random_and_distinct(applied_rootfs: AppliedRootfs) -> None:
    directory = applied_rootfs.root / "etc/ddmail/secrets"
    values = [
        (directory / f"{n}.key").read_text().strip()
        for n in ("web", "admin", "backend", "dovecot", "audit")
    ]
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in values)
    assert len(set(values)) == len(values)


def test_the_backup_key_is_the_operators_public_key(applied_rootfs: AppliedRootfs) -> None:
    key = (applied_rootfs.root / "etc/ddmail/backup-public.asc").read_text()
    assert key.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert "PRIVATE" not in key


def test_no_daemon_was_left_running(applied_rootfs: AppliedRootfs) -> None:
    """The database started for the build was stopped: the image boots from a clean state."""
    assert not (applied_rootfs.root / "run/postgresql/15-main.pid").exists()


SECRET_READERS = {
    "web.key": {"ddmail-web", "ddmail-backend"},
    "admin.key": {"ddmail-admin", "ddmail-backend"},
    "backend.key": {"ddmail-backend", "ddmail-keyhandler"},
    "dovecot.key": {"ddmail-keyhandler", "ddmail-auth"},
    "audit.key": {"ddmail-web", "ddmail-admin"},
    "master.keys": {"ddmail-web", "ddmail-admin"},
    "tlsrpt.key": {"ddmail-tlsrpt", "ddmail-backend"},
}
USERS = (
    "ddmail-web",
    "ddmail-backend",
    "ddmail-keyhandler",
    "ddmail-pgpstage",
    "ddmail-milter",
    "ddmail-tlsrpt",
    "ddmail-auth",
    "ddmail-admin",
    "vmail",
    "postfix",
    "www-data",
    "postgres",
)


def test_each_secret_is_readable_by_exactly_its_two_processes(
    applied_rootfs: AppliedRootfs,
) -> None:
    """Tried for real, as each account, with the groups the accounts really have."""
    script = "; ".join(
        f"for u in {' '.join(USERS)}; do runuser -u $u -- test -r /etc/ddmail/secrets/{name} "
        f"&& echo {name} $u; done"
        for name in SECRET_READERS
    )
    script += "; true"  # the last `test -r` of the loop may fail
    found = ok(in_chroot(applied_rootfs.root, "sh", "-c", script))
    readers: dict[str, set[str]] = {name: set() for name in SECRET_READERS}
    for line in found.splitlines():
        name, user = line.split()
        readers[name].add(user)
    assert readers == SECRET_READERS


def test_only_dovecot_and_the_backend_may_enter_the_maildirs(
    applied_rootfs: AppliedRootfs,
) -> None:
    """The backend sizes and erases maildirs (group vmail); the panel and the rest may not."""
    script = (
        f"for u in {' '.join(USERS)}; do runuser -u $u -- test -w /var/lib/ddmail/mail "
        "&& echo $u; done; true"
    )
    found = set(ok(in_chroot(applied_rootfs.root, "sh", "-c", script)).split())
    assert found == {"vmail", "ddmail-backend"}


def test_every_ddmail_account_reads_the_config_and_nobody_else(
    applied_rootfs: AppliedRootfs,
) -> None:
    script = (
        f"for u in {' '.join(USERS)}; do runuser -u $u -- test -r /etc/ddmail/ddmail.toml "
        "&& echo $u; done; true"
    )
    found = set(ok(in_chroot(applied_rootfs.root, "sh", "-c", script)).split())
    assert found == {u for u in USERS if u.startswith("ddmail-")}


def test_peer_authentication_maps_each_account_to_its_role(applied_rootfs: AppliedRootfs) -> None:
    """With the database running (only for this test, inside its own PID namespace): each
    DDMail account logs in as its own role, the mail daemons' accounts as ddmail_mailread, and
    an account the map does not name is refused."""
    script = """
pg_ctlcluster 15 main start
try() { runuser -u "$1" -- psql -XAtq -d ddmail -U "$2" -c 'SELECT current_user' 2>/dev/null \
  || echo "refused $1 $2"; }
try ddmail-web ddmail-web
try ddmail-keyhandler ddmail-keyhandler
try postfix ddmail_mailread
try dovecot ddmail_mailread
try ddmail-auth ddmail_mailread
try ddmail-milter ddmail_mailread
try ddmail-web ddmail-backend
try www-data ddmail_mailread
try postfix ddmail-backend
psql_port=$(runuser -u postgres -- psql -XAtq -c 'SHOW port'); echo "port $psql_port"
runuser -u postgres -- psql -XAtq -c 'SHOW listen_addresses' | sed 's/^/listen /'
runuser -u postgres -- psql -XAtq -d ddmail -c \
  "SELECT 'views ' || count(*) FROM pg_views WHERE viewname LIKE 'mail\\_%'"
pg_ctlcluster 15 main stop
"""
    found = ok(in_chroot(applied_rootfs.root, "sh", "-ec", script)).splitlines()
    assert found == [
        "ddmail-web",
        "ddmail-keyhandler",
        "ddmail_mailread",
        "ddmail_mailread",
        "ddmail_mailread",
        "ddmail_mailread",
        "refused ddmail-web ddmail-backend",
        "refused www-data ddmail_mailread",
        "refused postfix ddmail-backend",
        "port 5432",
        "listen ",
        "views 6",  # migrated: the six mail_* views exist
    ]


def test_acme_mode_installs_the_request_command_and_renewals_trust_the_same_ca(
    applied_rootfs: AppliedRootfs,
) -> None:
    """tls mode acme in a chroot: nothing is requested yet (no nginx running), but the request
    command names the inventory's ACME server, and certbot's renewals get its CA bundle."""
    root = applied_rootfs.root
    request = root / "usr/local/sbin/ddmail-acme-request"
    text = request.read_text()
    assert "--server https://localhost:14000/dir" in text and "--reuse-key" in text
    assert "export REQUESTS_CA_BUNDLE=/etc/ssl/ddmail-ci/pebble-https.pem" in text
    assert (request.stat().st_mode & 0o777) == 0o755
    dropin = root / "etc/systemd/system/certbot.service.d/ddmail-ca-bundle.conf"
    assert "Environment=REQUESTS_CA_BUNDLE=/etc/ssl/ddmail-ci/pebble-https.pem" in (
        dropin.read_text()
    )
    hook = root / "etc/letsencrypt/renewal-hooks/deploy/ddmail"
    assert (hook.stat().st_mode & 0o777) == 0o755
    assert not (root / "etc/letsencrypt/live").exists()
    config = (root / "etc/ddmail/ddmail.toml").read_text()
    assert '"/etc/letsencrypt"' in config  # backed up with the other secrets


def test_the_filters_are_in_the_mail_path_and_start_at_boot(applied_rootfs: AppliedRootfs) -> None:
    """Roles redis, clamav and rspamd deployed: Postfix calls rspamd's milter on every port,
    Dovecot files spam into Junk, the sockets' groups hold who talks to them, the three units
    start at boot, and freshclam is masked only because the test inventory says so (offline)."""
    root = applied_rootfs.root
    milter = "unix:/run/rspamd/milter.sock"
    assert ok(in_chroot(root, "postconf", "-h", "smtpd_milters")).strip() == milter
    # 465, 587 and the loopback one of Tor and I2P: DDMail's submission milter first, then
    # rspamd's.
    master = ok(in_chroot(root, "postconf", "-P"))
    overrides = [line for line in master.splitlines() if "/smtpd_milters = " in line]
    assert len(overrides) == 3 and all(o.endswith(f",{milter}") for o in overrides), master
    assert "spam-to-junk.sieve" in ok(in_chroot(root, "doveconf", "-n"))
    groups = {u: set(ok(in_chroot(root, "id", "-nG", u)).split()) for u in ("postfix", "_rspamd")}
    assert "_rspamd" in groups["postfix"]
    assert {"redis", "clamav"} <= groups["_rspamd"]
    wants = root / "etc/systemd/system/multi-user.target.wants"
    for unit in ("redis-server.service", "clamav-daemon.service", "rspamd.service"):
        assert (wants / unit).is_symlink(), unit
    assert (root / "etc/systemd/system/sockets.target.wants/clamav-daemon.socket").is_symlink()
    freshclam = root / "etc/systemd/system/clamav-freshclam.service"
    assert freshclam.is_symlink() and str(freshclam.readlink()) == "/dev/null"
    dropin = (root / "etc/systemd/system/rspamd.service.d/ddmail.conf").read_text()
    assert "ExecStart=/opt/ddmail/venv/bin/ddmail-logwrap -- /usr/bin/rspamd" in dropin
    ok(in_chroot(root, "rspamadm", "configtest", "--strict"))


def test_policy_hosts_of_customer_domains_get_certificates_nginx_can_load(
    applied_rootfs: AppliedRootfs,
) -> None:
    """Role certificates' MTA-STS part (DN 40): root's timer is installed and enabled, its unit
    passes systemd's checks, and a certificate certbot issues for a policy host lands, through
    the deploy hook, where nginx's workers load it by SNI; the program removes it again."""
    root = applied_rootfs.root
    system = root / "etc/systemd/system"
    units = ["ddmail-mta-sts-certificates.service", "ddmail-mta-sts-certificates.timer"]
    assert (system / "timers.target.wants" / units[1]).is_symlink()
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", *units],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and "ddmail-" not in result.stderr, result.stderr
    service = (system / units[0]).read_text()
    assert (
        "ExecStart=/opt/ddmail/venv/bin/ddmail admin mta-sts certificates --config "
        "/etc/ddmail/ddmail.toml --dir /etc/ssl/ddmail/mta-sts "
        "--issue /usr/local/sbin/ddmail-mta-sts-certificate"
    ) in service
    directory = "/etc/ssl/ddmail/mta-sts"
    assert ok(in_chroot(root, "stat", "-c", "%U %G %a", directory)).split() == [
        "root",
        "www-data",
        "750",
    ]
    # What certbot leaves in a new lineage, then its deploy hook as certbot runs it.
    name = "mta-sts.customer.example"
    lineage = f"/tmp/lineage/{name}"
    make = (
        f"mkdir -p {lineage} && cd {lineage} && OPENSSL_CONF=/dev/null openssl req -x509 "
        f"-newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc -keyout privkey.pem "
        f"-out fullchain.pem -subj /CN={name} -addext subjectAltName=DNS:{name} -days 1"
    )
    ok(in_chroot(root, "sh", "-ec", make))
    hook = "/etc/letsencrypt/renewal-hooks/deploy/ddmail"
    try:
        ok(in_chroot(root, "env", f"RENEWED_LINEAGE={lineage}", hook))
        installed = ok(
            in_chroot(
                root,
                "stat",
                "-c",
                "%n %U %G %a",
                f"{directory}/{name}.pem",
                f"{directory}/{name}.key",
            )
        ).splitlines()
        assert installed == [
            f"{directory}/{name}.pem root root 644",
            f"{directory}/{name}.key root www-data 640",
        ]
        ok(in_chroot(root, "nginx", "-t"))
        program = "/usr/local/sbin/ddmail-mta-sts-certificate"
        assert in_chroot(root, program, "issue", "mta-sts.x/../../etc").returncode == 2
        # Another certbot run holds the lock: "not tried" (75), so no hours-long back-off.
        busy = "/tmp/busy-certbot"
        fake = root / busy.lstrip("/") / "certbot"
        fake.parent.mkdir(exist_ok=True)
        fake.write_text(
            "#!/bin/sh\necho 'Another instance of Certbot is already running.' >&2\nexit 1\n"
        )
        fake.chmod(0o755)
        for action in ("issue", "remove"):
            tried = in_chroot(root, "env", f"PATH={busy}:/usr/bin:/bin", program, action, name)
            assert tried.returncode == 75, (action, tried.stderr)
        assert (root / directory.lstrip("/") / f"{name}.pem").exists()
        ok(in_chroot(root, program, "remove", name))
        assert not (root / directory.lstrip("/") / f"{name}.pem").exists()
        assert not (root / directory.lstrip("/") / f"{name}.key").exists()
    finally:
        ok(
            in_chroot(
                root, "rm", "-rf", "/tmp/lineage", "/tmp/busy-certbot", f"{directory}/{name}.pem"
            )
        )
        ok(in_chroot(root, "rm", "-f", f"{directory}/{name}.key"))


ONION_DIR = "/var/lib/tor/ddmail"
I2P_KEYS = "/var/lib/i2pd/ddmail.dat"


def test_tor_and_i2pd_are_configured_and_their_keys_made(applied_rootfs: AppliedRootfs) -> None:
    """Roles tor and i2pd (issue 12): tor accepts its torrc as the unit runs it; the keys
    exist, their accounts' alone, name the addresses ddmail.toml publishes and are backed up;
    the units run Debian's profiles as mandatory, are hardened and start at boot. (That the
    second run kept the keys: test_the_second_run_changes_nothing.)"""
    root = applied_rootfs.root
    verified = ok(
        in_chroot(root, "tor", "--defaults-torrc", "/dev/null", "--verify-config", "-f",
                  "/etc/tor/torrc")
    )  # fmt: skip
    assert "Configuration was valid" in verified
    files = [ONION_DIR, *(f"{ONION_DIR}/{n}" for n in ("hs_ed25519_secret_key",
             "hs_ed25519_public_key", "hostname")), I2P_KEYS]  # fmt: skip
    found = ok(in_chroot(root, "stat", "-c", "%n %U %G %a", *files)).splitlines()
    assert found == [
        f"{ONION_DIR} debian-tor debian-tor 700",
        f"{ONION_DIR}/hs_ed25519_secret_key debian-tor debian-tor 600",
        f"{ONION_DIR}/hs_ed25519_public_key debian-tor debian-tor 600",
        f"{ONION_DIR}/hostname debian-tor debian-tor 600",
        f"{I2P_KEYS} i2pd i2pd 600",
    ]
    program = "/usr/local/sbin/ddmail-anon-keys"
    onion = json.loads(ok(in_chroot(root, "python3", program, "onion-address", ONION_DIR)))
    i2p = json.loads(ok(in_chroot(root, "python3", program, "i2p-address", I2P_KEYS)))
    hostname = (root / ONION_DIR.lstrip("/") / "hostname").read_text().strip()
    assert onion["address"] == hostname and re.fullmatch(r"[a-z2-7]{56}\.onion", hostname)
    assert re.fullmatch(r"[a-z2-7]{52}\.b32\.i2p", i2p["address"])
    config = tomllib.loads((root / "etc/ddmail/ddmail.toml").read_text())
    assert config["public"]["onion_hostname"] == hostname
    assert config["public"]["i2p_hostname"] == i2p["address"]
    assert {ONION_DIR, I2P_KEYS} <= set(config["backup"]["paths"])
    system = root / "etc/systemd/system"
    tor = (system / "tor@default.service.d/ddmail.conf").read_text()
    assert "AppArmorProfile=system_tor\n" in tor
    assert "ExecStart=/usr/bin/tor --defaults-torrc /dev/null -f /etc/tor/torrc" in tor
    i2pd = (system / "i2pd.service.d/ddmail.conf").read_text()
    assert "AppArmorProfile=i2pd\n" in i2pd and "--conf=/etc/i2pd/i2pd.conf" in i2pd
    for unit in ("tor.service", "i2pd.service"):
        assert (system / "multi-user.target.wants" / unit).is_symlink(), unit
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", "tor@default.service",
         "i2pd.service"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    # Debian's tor@default names /bin/kill, which a rootfs without procps lacks: only what
    # it says about our drop-ins counts.
    assert "ddmail.conf" not in result.stderr, result.stderr
    for profile in ("system_tor", "usr.sbin.i2pd"):
        assert not (root / "etc/apparmor.d/disable" / profile).exists(), profile
    conf = (root / "etc/i2pd/i2pd.conf").read_text()
    for section in ("http", "httpproxy", "socksproxy", "sam", "bob", "i2cp", "i2pcontrol",
                    "upnp", "addressbook"):  # fmt: skip
        assert re.search(rf"^\[{section}\]\nenabled = false$", conf, re.M), section
    tunnels = (root / "etc/i2pd/tunnels.conf").read_text()
    assert tunnels.count("type = server") == 3 and "type = client" not in tunnels
    assert tunnels.count("keys = ddmail.dat") == 3
    assert tunnels.count("enableuniquelocal = false") == 3
    assert not any((root / "etc/i2pd/tunnels.ddmail.d").iterdir())

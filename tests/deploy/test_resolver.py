"""Outbound DANE and MTA-STS as the playbook deploys them (roles unbound and mta_sts_resolver,
issue 11), checked in the applied rootfs: Unbound's configuration is DDMail's one file and
passes unbound-checkconf, the host's resolv.conf names it with trust-ad, its Debian profile and
ours for mta-sts-daemon are in place, the resolver's unit is hardened and starts at boot, and
Postfix, rspamd and the backend ask the local resolver. The booted VM (tests/deploy/vmcheck.py)
checks them running."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.deploy.chroot import in_chroot
from tests.deploy.conftest import AppliedRootfs
from tests.systemd_security import MAX_EXPOSURE, exposure

MTA_STS_UNIT = "postfix-mta-sts-resolver.service"
SOCKETMAP = "socketmap:inet:127.0.0.1:8461:postfix"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_unbound_has_ddmails_one_file_and_accepts_it(applied_rootfs: AppliedRootfs) -> None:
    root = applied_rootfs.root
    conf = (root / "etc/unbound/unbound.conf").read_text()
    assert "role unbound" in conf
    # Debian's conf.d snippets are not read: one file sets the anchor and the control socket.
    assert "include" not in conf.replace("# ", "")
    ok(in_chroot(root, "unbound-checkconf"))
    interfaces = ok(in_chroot(root, "unbound-checkconf", "-o", "interface")).split()
    assert sorted(interfaces) == ["127.0.0.1", "::1"]
    for option, value in (
        ("verbosity", "0"),
        ("log-queries", "no"),
        ("log-replies", "no"),
        ("auto-trust-anchor-file", "/var/lib/unbound/root.key"),
        ("control-interface", "/run/unbound.ctl"),
        ("chroot", ""),
        ("username", "unbound"),
    ):
        got = ok(in_chroot(root, "unbound-checkconf", "-o", option)).strip()
        assert got == value, (option, got)
    # The root's key, seeded from dns-root-data (Debian's unit would copy it at the first
    # start; unbound-checkconf wants it to exist), Unbound's to keep current.
    anchor = root / "var/lib/unbound/root.key"
    assert ". IN DNSKEY 257 " in anchor.read_text()
    assert ok(in_chroot(root, "stat", "-c", "%U", "/var/lib/unbound/root.key")).strip() == "unbound"


def test_the_host_asks_unbound_with_trust_ad(applied_rootfs: AppliedRootfs) -> None:
    root = applied_rootfs.root
    resolv = root / "etc/resolv.conf"
    assert not resolv.is_symlink()
    lines = [ln for ln in resolv.read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines == ["nameserver 127.0.0.1", "options edns0 trust-ad"]
    hook = root / "etc/dhcp/dhclient-enter-hooks.d/ddmail-unbound"
    assert "make_resolv_conf()" in hook.read_text()


def test_postfix_rspamd_and_the_backend_use_the_local_resolver(
    applied_rootfs: AppliedRootfs,
) -> None:
    root = applied_rootfs.root
    names = ["smtp_tls_security_level", "smtp_dns_support_level", "smtp_tls_policy_maps"]
    got = ok(in_chroot(root, "postconf", "-h", *names)).split("\n")[:3]
    assert got == ["dane", "dnssec", SOCKETMAP]
    options = (root / "etc/rspamd/local.d/options.inc").read_text()
    assert re.search(r'nameserver = \["127\.0\.0\.1:53"\];', options), options
    config = ok(
        in_chroot(
            root,
            "/opt/ddmail/venv/bin/python",
            "-c",
            "import tomllib, json; print(json.dumps(tomllib.load(open('/etc/ddmail/ddmail.toml',"
            " 'rb'))['backend']['dns_nameservers']))",
        )
    )
    assert json.loads(config) == ["127.0.0.1"]
    backend = (root / "etc/systemd/system/ddmail-backend.service").read_text()
    assert "\nIPAddressDeny=any\n" in backend and "\nIPAddressAllow=localhost\n" in backend


def test_apparmor_profiles_of_both_are_installed_in_enforce_mode(
    applied_rootfs: AppliedRootfs,
) -> None:
    root = applied_rootfs.root
    apparmor = root / "etc/apparmor.d"
    for name in ("usr.sbin.unbound", "ddmail-mta-sts-daemon"):
        assert (apparmor / name).is_file(), name
        assert not (apparmor / "disable" / name).exists(), name
        assert not (apparmor / "force-complain" / name).exists(), name
        text = (apparmor / name).read_text()
        assert not re.search(r"flags=\([^)]*complain", text), name
        ok(in_chroot(root, "apparmor_parser", "-Q", "-K", f"/etc/apparmor.d/{name}"))


def test_the_mta_sts_resolver_unit_is_hardened_and_starts_at_boot(
    applied_rootfs: AppliedRootfs,
) -> None:
    root = applied_rootfs.root
    system = root / "etc/systemd/system"
    unit = (system / MTA_STS_UNIT).read_text()
    assert "\nAppArmorProfile=ddmail-mta-sts-daemon\n" in unit
    assert "\nUser=_mta-sts\n" in unit
    wants = system / "multi-user.target.wants" / MTA_STS_UNIT
    assert wants.is_symlink() and str(wants.readlink()) == f"/etc/systemd/system/{MTA_STS_UNIT}"
    assert (system / "multi-user.target.wants/unbound.service").is_symlink()
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", MTA_STS_UNIT],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and "mta-sts" not in result.stderr, result.stderr
    assert exposure(Path(MTA_STS_UNIT), root=root) <= MAX_EXPOSURE
    owner = ok(in_chroot(root, "stat", "-c", "%U %G %a", "/var/lib/mta-sts")).split()
    assert owner == ["_mta-sts", "_mta-sts", "700"]
    load = (
        "import sys; from postfix_mta_sts_resolver.utils import load_config; "
        "c = load_config('/etc/mta-sts-daemon.yml'); print(c['host'], c['port'], "
        "c['cache']['options']['filename'])"
    )
    assert ok(in_chroot(root, "/usr/bin/python3", "-c", load)).split() == [
        "127.0.0.1",
        "8461",
        "/var/lib/mta-sts/cache.db",
    ]

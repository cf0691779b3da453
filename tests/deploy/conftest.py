"""The playbook applied for real: a fresh Debian 12 rootfs (tests/deploy/chroot.py), the example
inventory applied into it twice through community.general.chroot. Marked `deploy`."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy import chroot

# Kept after the session for the VM boot (helper "vm") and for reading a failed run.
ROOT = Path(os.environ.get("DDMAIL_DEPLOY_ROOT", "/var/tmp/ddmail-deploy/rootfs"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/deploy" in str(item.fspath):
            item.add_marker(pytest.mark.deploy)
            # The first test's setup applies the playbook twice (each run has its own limit,
            # chroot.apply): longer than the suite's default of 300 s on a busy machine.
            item.add_marker(pytest.mark.timeout(1800))


@dataclass(frozen=True)
class AppliedRootfs:
    root: Path
    first: chroot.Recap
    second: chroot.Recap


def backup_public_key(home: Path) -> str:
    """A throwaway OpenPGP key pair's public half (ASCII armour), as an operator would export."""
    env = {**os.environ, "GNUPGHOME": str(home)}
    gpg = ["gpg", "--batch", "--quiet", "--passphrase", ""]

    def run(*args: str) -> str:
        return subprocess.run(
            [*gpg, *args], env=env, check=True, capture_output=True, text=True, timeout=60
        ).stdout

    run("--quick-gen-key", "DDMail test backups <backup@example.net>", "ed25519", "cert", "never")
    fingerprint = next(
        line.split(":")[9]
        for line in run("--with-colons", "--list-keys").splitlines()
        if line.startswith("fpr:")
    )
    run("--quick-add-key", fingerprint, "cv25519", "encr", "never")
    return run("--armor", "--export")


# The filters on a host without the Internet, as the local stack runs them
# (ddmail_stack/filters.py): no DNS lists, no sender DNS checks (the host's Unbound, which
# site.yml names for rspamd, answers at once offline: SERVFAIL), the GTUBE test variants
# (Junk), a log of every verdict (info) to look for addresses in, and freshclam masked: the VM
# check puts a locally built signature database in place instead (tests/deploy/test_vm.py).
FILTERS_OFFLINE = {
    "rspamd_ip_blocklists": False,
    "rspamd_sender_dns_checks": False,
    "rspamd_test_patterns": True,
    "rspamd_log_level": "info",
    "clamav_freshclam": False,
}


@pytest.fixture(scope="session")
def test_host_vars() -> Iterator[Path]:
    """What a test host differs in from the example inventory: the ACME server the VM check
    starts on loopback (pebble, its HTTPS signed by a CA of the check's own) instead of Let's
    Encrypt, an operator backup key, and the filters without the Internet."""
    with tempfile.TemporaryDirectory(prefix="ddmail-deploy-") as tmp:
        home = Path(tmp) / "gnupg"
        home.mkdir(mode=0o700)
        extra = Path(tmp) / "test-host.json"
        extra.write_text(
            json.dumps(
                {
                    "ddmail_tls_mode": "acme",
                    "ddmail_acme_server": "https://localhost:14000/dir",
                    "ddmail_acme_ca_bundle": "/etc/ssl/ddmail-ci/pebble-https.pem",
                    "ddmail_backup_public_key": backup_public_key(home),
                    # The operator serves the zone: the daily signer runs too.
                    "ddmail_zone_sign": True,
                    "ddmail_zone_nameservers": ["ns1.example.org", "ns2.example.net"],
                    **FILTERS_OFFLINE,
                }
            )
        )
        yield extra


@pytest.fixture(scope="session")
def applied_rootfs(test_host_vars: Path) -> AppliedRootfs:
    chroot.extract(ROOT)
    first = chroot.apply(ROOT, "-e", f"@{test_host_vars}")
    assert first.returncode == 0, first.output[-6000:]
    second = chroot.apply(ROOT, "-e", f"@{test_host_vars}")
    assert second.returncode == 0, second.output[-6000:]
    return AppliedRootfs(ROOT, first, second)

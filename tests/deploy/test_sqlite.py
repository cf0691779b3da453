"""ddmail_database=sqlite (trials only): one apply into a rootfs of its own gives a migrated
database file that every DDMail process and the mail daemons' lookups may open, and nothing
of PostgreSQL."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.deploy import chroot
from tests.deploy.chroot import in_chroot
from tests.deploy.conftest import ROOT

SQLITE_ROOT = Path(os.environ.get("DDMAIL_DEPLOY_SQLITE_ROOT", f"{ROOT}-sqlite"))


@pytest.fixture(scope="module")
def sqlite_rootfs(test_host_vars: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    extra = tmp_path_factory.mktemp("sqlite") / "sqlite.json"
    # The other TLS mode too, so that both are applied: a CA of the host's own, no certbot.
    extra.write_text(json.dumps({"ddmail_database": "sqlite", "ddmail_tls_mode": "selfsigned"}))
    chroot.extract(SQLITE_ROOT)
    recap = chroot.apply(SQLITE_ROOT, "-e", f"@{test_host_vars}", "-e", f"@{extra}")
    assert recap.returncode == 0, recap.output[-6000:]
    return SQLITE_ROOT


def test_the_database_file_belongs_to_group_ddmail(sqlite_rootfs: Path) -> None:
    found = in_chroot(
        sqlite_rootfs,
        "stat",
        "-c",
        "%U %G %a",
        "/var/lib/ddmail/sqlite",
        "/var/lib/ddmail/sqlite/ddmail.db",
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines() == ["root ddmail 2770", "ddmail-admin ddmail 660"]


def test_the_mail_lookups_read_sqlite(sqlite_rootfs: Path) -> None:
    assert in_chroot(sqlite_rootfs, "postfix", "check").returncode == 0
    maps = in_chroot(sqlite_rootfs, "postconf", "-h", "virtual_mailbox_domains").stdout
    assert maps.strip() == "proxy:sqlite:/etc/postfix/sql-domains.cf"
    groups = in_chroot(sqlite_rootfs, "id", "-nG", "postfix").stdout.split()
    assert "ddmail" in groups
    assert "driver = sqlite" in (sqlite_rootfs / "etc/dovecot/dovecot-sql.conf.ext").read_text()


def test_the_services_may_write_the_database_directory(sqlite_rootfs: Path) -> None:
    system = sqlite_rootfs / "etc/systemd/system"
    for unit in ("web", "backend", "keyhandler", "pgpstage", "milter", "periodic"):
        text = (system / f"ddmail-{unit}.service").read_text()
        assert "\nReadWritePaths=/var/lib/ddmail/sqlite\n" in text, unit


def test_no_postgresql_is_installed(sqlite_rootfs: Path) -> None:
    assert not (sqlite_rootfs / "etc/postgresql").exists()


def test_selfsigned_mode_signs_with_the_hosts_own_ca_and_installs_no_certbot(
    sqlite_rootfs: Path,
) -> None:
    verified = in_chroot(
        sqlite_rootfs,
        "openssl", "verify", "-CAfile", "/etc/ssl/ddmail/ca.pem", "/etc/ssl/ddmail/mail.pem",
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert not (sqlite_rootfs / "usr/bin/certbot").exists()
    assert not (sqlite_rootfs / "usr/local/sbin/ddmail-acme-request").exists()

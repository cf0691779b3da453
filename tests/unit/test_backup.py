"""Encrypted backups on a small SQLite deployment in a temporary directory: what is in them,
what is not (plaintext), the restore's checks and its refusal to overwrite (DN 33)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import make_url

from ddmail_admin import backup
from ddmail_admin.dbadmin import migrate
from ddmail_common.config import BackupSettings, Config, ConfigError, parse
from ddmail_common.migrate import upgrade
from tests.operatorkey import PASSPHRASE, OperatorKey, make_operator_key
from tests.stackrun import postgres_url

MARKER = "Quarterly-plaintext-marker-7f3a"


def config_data(root: Path) -> dict[str, Any]:
    return {
        "database": {"url": f"sqlite:///{root / 'db' / 'ddmail.sqlite3'}"},
        "backend": {
            "socket": "/run/b.sock",
            "mail_root": str(root / "mail"),
            "operator_address": "operator@ops.example",
        },
        "keyhandler": {"socket": "/run/k.sock", "unlock_listen": "127.0.0.1:10080"},
        "secrets": {"web": str(root / "secrets" / "web.key")},
        "web": {"master_keys": str(root / "secrets" / "master.keys")},
        "backup": {"dir": str(root / "backups"), "keep": 2, "paths": [str(root / "tls")]},
        "dkim": {"key_dir": str(root / "dkim")},
        "zone": {"dnssec_key_dir": str(root / "dnssec")},
    }


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorKey]:
    made = make_operator_key(tmp_path_factory.mktemp("operator"))
    yield made
    made.stop_agent()


def deployment(root: Path, key: OperatorKey) -> Config:
    (root / "mail" / "example.org" / "u1" / "cur").mkdir(parents=True)
    (root / "mail" / "example.org" / "u1" / "cur" / "1.eml").write_text(f"Subject: {MARKER}\n")
    (root / "mail" / "example.org" / "u1").chmod(0o700)
    (root / "mail" / "link").symlink_to("example.org")
    (root / "secrets").mkdir(mode=0o750)
    for name in ("web.key", "master.keys"):
        (root / "secrets" / name).write_text(f"{MARKER}-secret-" + "s" * 40)
        (root / "secrets" / name).chmod(0o640)
    (root / "tls").mkdir()
    (root / "tls" / "key.pem").write_text("tls key")
    (root / "dkim").mkdir(mode=0o2750)
    (root / "dkim" / "example.org.ddm1.key").write_text(f"{MARKER}-dkim-private-key")
    (root / "dkim" / "example.org.ddm1.key").chmod(0o640)
    (root / "dnssec").mkdir(mode=0o700)  # made by `dns zone --sign`
    (root / "dnssec" / "example.org.ksk.pem").write_text(f"{MARKER}-ksk")
    (root / "db").mkdir()
    url = f"sqlite:///{root / 'db' / 'ddmail.sqlite3'}"
    migrate(url)
    with sqlite3.connect(root / "db" / "ddmail.sqlite3") as conn:
        conn.execute(
            "INSERT INTO web_accounts (id, created_at, enabled, gratis, payment_reference)"
            " VALUES (?, 0, 1, 1, 'REF')",
            (MARKER,),
        )
    data = config_data(root)
    data["backup"]["public_key"] = str(key.public_key)
    return parse(data)


def restore(cfg: Config, archive: Path, key: OperatorKey, force: bool = False) -> backup.Restored:
    # The passphrase goes to gpg on its standard input (as `--passphrase-stdin` does).
    read, write = os.pipe()
    os.write(write, PASSPHRASE.encode() + b"\n")
    os.close(write)
    saved = os.dup(0)
    os.dup2(read, 0)
    try:
        return backup.restore(cfg, archive, key.homedir, passphrase_on_stdin=True, force=force)
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(read)


def test_backup_section_is_validated(tmp_path: Path) -> None:
    data = config_data(tmp_path)
    assert parse(data).backup == BackupSettings(
        dir=tmp_path / "backups", keep=2, paths=(tmp_path / "tls",)
    )
    data["backup"]["keep"] = 0
    with pytest.raises(ConfigError, match=r"backup\.keep: expected at least 1"):
        parse(data)
    data["backup"] = {"public_key": "operator.asc"}
    with pytest.raises(ConfigError, match=r"backup\.public_key: expected an absolute path"):
        parse(data)
    del data["backup"]
    assert parse(data).backup.dir == Path("/var/lib/ddmail/backups")


def test_backup_is_encrypted_0600_and_restores_everything(tmp_path: Path, key: OperatorKey) -> None:
    root = tmp_path / "r"
    cfg = deployment(root, key)
    made = backup.create(cfg, cfg.backup)
    assert backup.NAME.match(made.name)
    assert made.stat().st_mode & 0o777 == 0o600
    assert MARKER.encode() not in made.read_bytes()
    assert not list(made.parent.glob(".*partial"))

    # With the state still there, the restore refuses and changes nothing.
    with pytest.raises(backup.BackupError, match="refusing to overwrite"):
        restore(cfg, made, key)
    assert not list(root.glob(".*ddmail-restore*"))

    for part in ("mail", "secrets", "tls", "dkim", "dnssec", "db"):
        shutil.rmtree(root / part)
    done = restore(cfg, made, key)
    assert done.kept_aside == []
    eml = root / "mail" / "example.org" / "u1" / "cur" / "1.eml"
    assert eml.read_text() == f"Subject: {MARKER}\n"
    assert (root / "mail" / "example.org" / "u1").stat().st_mode & 0o777 == 0o700
    assert os.readlink(root / "mail" / "link") == "example.org"
    assert (root / "secrets").stat().st_mode & 0o777 == 0o750
    assert (root / "secrets" / "web.key").stat().st_mode & 0o777 == 0o640
    assert (root / "tls" / "key.pem").read_text() == "tls key"
    dkim_key = root / "dkim" / "example.org.ddm1.key"
    assert dkim_key.read_text() == f"{MARKER}-dkim-private-key"  # inside the encrypted archive
    assert dkim_key.stat().st_mode & 0o777 == 0o640
    assert (root / "dnssec" / "example.org.ksk.pem").read_text() == f"{MARKER}-ksk"
    with sqlite3.connect(root / "db" / "ddmail.sqlite3") as conn:
        assert conn.execute("SELECT id FROM web_accounts").fetchall() == [(MARKER,)]

    # --force replaces a live state and keeps the previous one aside.
    (root / "mail" / "example.org" / "u1" / "cur" / "2.eml").write_text("newer")
    done = restore(cfg, made, key, force=True)
    assert not (root / "mail" / "example.org" / "u1" / "cur" / "2.eml").exists()
    aside = [p for p in done.kept_aside if p.name.startswith(".mail.ddmail-old-")]
    assert aside and (aside[0] / "example.org" / "u1" / "cur" / "2.eml").exists()


def test_only_the_newest_are_kept(tmp_path: Path, key: OperatorKey) -> None:
    cfg = deployment(tmp_path / "r", key)
    old = [cfg.backup.dir / f"ddmail-2020010{i}T000000Z.tar.gpg" for i in range(1, 4)]
    cfg.backup.dir.mkdir()
    for path in old:
        path.write_bytes(b"x")
    made = backup.create(cfg, cfg.backup)
    assert backup.backups(cfg.backup.dir) == [made, old[2]]


def test_a_tampered_archive_is_refused_before_anything_moves(
    tmp_path: Path, key: OperatorKey
) -> None:
    root = tmp_path / "r"
    cfg = deployment(root, key)
    decrypted = subprocess.run(
        ["gpg", "--batch", "--quiet", "--homedir", str(key.homedir), "--pinentry-mode",
         "loopback", "--passphrase-fd", "0", "--decrypt", str(backup.create(cfg, cfg.backup))],
        input=PASSPHRASE.encode(), capture_output=True, check=True,
    ).stdout  # fmt: skip
    # Same archive, one message changed: re-encrypted to the operator's key.
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(decrypted)) as src,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst,
    ):
        for member in src:
            data = src.extractfile(member) if member.isfile() else None
            if member.name.endswith("1.eml"):
                data = io.BytesIO(b"Subject: forged!\n"[: member.size].ljust(member.size))
            dst.addfile(member, data)
    tampered = encrypt_to(key, out.getvalue(), tmp_path / "tampered.tar.gpg")
    for part in ("mail", "secrets", "tls", "dkim", "dnssec", "db"):
        shutil.rmtree(root / part)
    with pytest.raises(backup.BackupError, match=r"1\.eml: sha256 does not match"):
        restore(cfg, tampered, key)
    assert sorted(p.name for p in root.iterdir()) == ["backups"]  # nothing staged is left


def test_without_the_secret_key_nothing_is_restored(tmp_path: Path, key: OperatorKey) -> None:
    root = tmp_path / "r"
    cfg = deployment(root, key)
    made = backup.create(cfg, cfg.backup)
    empty = tmp_path / "empty-gnupg"
    empty.mkdir(mode=0o700)
    with pytest.raises(backup.BackupError, match="gpg could not decrypt"):
        backup.restore(cfg, made, empty, force=True)
    assert (root / "mail" / "example.org" / "u1" / "cur" / "1.eml").exists()
    subprocess.run(["gpgconf", "--homedir", str(empty), "--kill", "all"], check=False)


@pytest.mark.postgres
def test_postgresql_as_root_dumps_and_restores_as_os_user_postgres() -> None:
    """Production: the URL names no user; root has no role, so pg_dump, psql and pg_restore
    run as OS user postgres over the unix socket."""
    url = postgres_url()
    if url is None or os.geteuid() != 0:
        pytest.skip("needs DDMAIL_TEST_DB=postgresql and root")
    name = make_url(url).database
    userless = f"postgresql+psycopg:///{name}?host=/var/run/postgresql"
    admin = "host=127.0.0.1 user=ddmail_test password=ddmail_test dbname="
    try:
        upgrade(url)
        with psycopg.connect(admin + str(name), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO web_accounts (id, created_at, enabled, gratis, payment_reference)"
                " VALUES (%s, 0, TRUE, TRUE, 'REF')",
                (MARKER,),
            )
        assert backup.database_has_data(userless)
        member, dump, meta = backup.dump_database(userless)
        assert member == "database.pgdump" and dump.startswith(b"PGDMP")
        with psycopg.connect(admin + "postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name}")
        assert not backup.database_has_data(userless)
        backup.restore_database(userless, {"database": meta}, dump, "20270101T000000Z")
        with psycopg.connect(admin + str(name)) as conn:
            rows = conn.execute("SELECT id FROM web_accounts").fetchall()
        assert rows == [(MARKER,)]
    finally:
        with psycopg.connect(admin + "postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_an_unusable_public_key_leaves_no_file(tmp_path: Path, key: OperatorKey) -> None:
    cfg = deployment(tmp_path / "r", key)
    bad = tmp_path / "bad.asc"
    bad.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnonsense\n")
    with pytest.raises(backup.BackupError, match="gpg failed"):
        backup.create(cfg, dataclasses.replace(cfg.backup, public_key=bad))
    assert list(cfg.backup.dir.iterdir()) == []


def encrypt_to(key: OperatorKey, tar_bytes: bytes, out: Path) -> Path:
    subprocess.run(
        ["gpg", "--batch", "--quiet", "--homedir", str(key.homedir), "--trust-model", "always",
         "--recipient-file", str(key.public_key), "--encrypt", "--output", str(out)],
        input=tar_bytes, check=True,
    )  # fmt: skip
    return out


def test_a_member_cannot_escape_its_root_through_a_symlink(
    tmp_path: Path, key: OperatorKey
) -> None:
    cfg = deployment(tmp_path / "r", key)
    for part in ("mail", "secrets", "tls", "db"):
        shutil.rmtree(tmp_path / "r" / part)
    outside = tmp_path / "outside"
    outside.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, data: bytes | None = None, kind: bytes = tarfile.REGTYPE) -> None:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = str(outside)
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        roots = [{"path": str(cfg.mail_root), "type": "dir"}]
        add("roots.json", json.dumps(roots).encode())
        add("files/0", kind=tarfile.DIRTYPE)
        add("files/0/evil", kind=tarfile.SYMTYPE)
        add("files/0/evil/pwned", b"x")
    forged = encrypt_to(key, buf.getvalue(), tmp_path / "forged.tar.gpg")
    with pytest.raises(backup.BackupError, match="leaves the root"):
        restore(cfg, forged, key)
    assert list(outside.iterdir()) == []
    assert not cfg.mail_root.exists()

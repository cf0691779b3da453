"""The operator's OpenPGP key pair for backups, as a test harness makes it on the controller:
the public half goes to the playbook (`ddmail_backup_public_key`), the secret half only to the
restore inside the test VM."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

UID = "DDMail CI backups <backups@ci.invalid>"


@dataclass(frozen=True)
class BackupKey:
    public: str  # ASCII armour, the inventory variable's value
    secret: bytes  # ASCII armour of the secret key, no passphrase (a throwaway test key)


def make(home: Path) -> BackupKey:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback"]
    # The empty passphrase goes on stdin (fd 0), like any passphrase would.
    subprocess.run(
        [
            *gpg,
            "--passphrase-fd",
            "0",
            "--quick-gen-key",
            UID,
            "future-default",
            "default",
            "never",
        ],
        input=b"",
        check=True,
        capture_output=True,
    )
    public = subprocess.run(
        [*gpg, "--armor", "--export", UID], check=True, capture_output=True, text=True
    ).stdout
    secret = subprocess.run(
        [*gpg, "--passphrase-fd", "0", "--armor", "--export-secret-keys", UID],
        input=b"",
        check=True,
        capture_output=True,
    ).stdout
    assert "BEGIN PGP PUBLIC KEY BLOCK" in public and b"BEGIN PGP PRIVATE KEY BLOCK" in secret
    return BackupKey(public, secret)

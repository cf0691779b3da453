"""The operator's OpenPGP key pair for backup tests: made by gpg in a temporary home."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

PASSPHRASE = "correct horse battery staple for backups"


@dataclass(frozen=True)
class OperatorKey:
    homedir: Path  # holds the secret key (what the operator keeps offline)
    public_key: Path  # ASCII armour, what the server gets

    def stop_agent(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.homedir), "--kill", "all"], check=False, timeout=30
        )


def make_operator_key(where: Path) -> OperatorKey:
    home = where / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--no-tty", "--quiet", "--homedir", str(home)]
    subprocess.run(
        [*gpg, "--pinentry-mode", "loopback", "--passphrase-fd", "0",
         "--quick-gen-key", "DDMail operator <operator@example.org>", "default", "default",
         "never"],
        input=PASSPHRASE.encode(), check=True, timeout=120,
    )  # fmt: skip
    armour = subprocess.run(
        [*gpg, "--armor", "--export"], capture_output=True, check=True, timeout=60
    ).stdout
    assert armour.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    public = where / "operator.asc"
    public.write_bytes(armour)
    return OperatorKey(home, public)

"""Generated credentials: account ids, usernames, panel passwords and key files.

Nothing here is chosen by the user, so every secret has a known, high entropy; the key file is
512 random bits, which is why its check is a plain SHA-256 digest and not a slow hash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from contextlib import AbstractContextManager
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ddmail_common.config import Argon2Settings
from ddmail_web.workslots import WorkSlots

ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
LOWER = "abcdefghijkmnpqrstuvwxyz23456789"
KEYFILE_MAX_BYTES = 4096
KEYFILE_HEADER = (
    "DDMail account key file. Keep it secret: with your username and password it\n"
    "logs you in, and it resets forgotten mailbox passwords. It cannot be recovered.\n"
)


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def new_account_id() -> str:
    return _random(LOWER, 16)


def new_username() -> str:
    return _random(LOWER, 12)


def new_password() -> str:
    return _random(ALPHABET, 24)


def new_payment_reference() -> str:
    return _random(LOWER.upper(), 12)


def new_recovery_secret() -> str:
    return secrets.token_hex(32)


@dataclass(frozen=True)
class KeyFile:
    key: bytes  # 64 random bytes

    @classmethod
    def generate(cls) -> KeyFile:
        return cls(os.urandom(64))

    def render(self, account: str, username: str) -> bytes:
        return (
            f"{KEYFILE_HEADER}account: {account}\nuser: {username}\n"
            f"key: {base64.b64encode(self.key).decode()}\n"
        ).encode()

    @classmethod
    def parse(cls, data: bytes) -> KeyFile | None:
        """The key in an uploaded file, or None if it is not a DDMail key file."""
        if len(data) > KEYFILE_MAX_BYTES:
            return None
        for line in data.decode("ascii", errors="replace").splitlines():
            if line.startswith("key:"):
                try:
                    key = base64.b64decode(line[4:].strip(), validate=True)
                except (binascii.Error, ValueError):
                    return None
                return cls(key) if len(key) == 64 else None
        return None

    def digest(self) -> str:
        return hashlib.sha256(b"ddmail-keyfile/v1\x00" + self.key).hexdigest()

    def matches(self, digest: str) -> bool:
        return hmac.compare_digest(self.digest(), digest)

    def _seal_key(self, username: str) -> bytes:
        info = b"ddmail-recovery-seal/v1\x00" + username.encode()
        return HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(self.key)

    def seal(self, username: str, secret: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + AESGCM(self._seal_key(username)).encrypt(nonce, secret.encode(), None)

    def unseal(self, username: str, sealed: bytes) -> str | None:
        try:
            plain = AESGCM(self._seal_key(username)).decrypt(sealed[:12], sealed[12:], None)
        except InvalidTag:
            return None
        return plain.decode()


class Passwords:
    """argon2id for panel passwords, run only in a slot of the shared work pool (WORKSLOTS):
    however many requests arrive, at most that many hashes run at once."""

    # How long a request waits for a slot: someone who has proven a factor waits longer.
    PROVEN_WAIT = 10.0
    ANONYMOUS_WAIT = 1.0

    def __init__(self, params: Argon2Settings, slots: WorkSlots) -> None:
        self._hasher = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
        )
        self.slots = slots

    def _slot(self, proven: bool) -> AbstractContextManager[None]:
        wait = self.PROVEN_WAIT if proven else self.ANONYMOUS_WAIT
        return self.slots.slot(wait, priority=proven)

    def hash(self, password: str, proven: bool = True) -> str:
        """PROVEN: the caller has shown a key file or a session (not so for a registration)."""
        with self._slot(proven):
            return self._hasher.hash(password)

    def verify(self, stored: str, password: str) -> bool:
        """Only ever called once the right key file was shown (so always PROVEN)."""
        with self._slot(True):
            try:
                return self._hasher.verify(stored, password)
            except (VerificationError, InvalidHashError):
                return False

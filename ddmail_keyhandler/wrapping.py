"""Wrapping a mailbox private key so only its password, or the account's key file, opens it.

Password wrap: AES-256-GCM under argon2id(password). A wrong password fails the GCM tag, so the
wrap is also the password check (one argon2id run per login, no separate hash).

Recovery wrap: the account has an X25519 key pair whose private half is argon2id(key-file secret)
and is never stored; only its public half is. Any new mailbox key is sealed to that public key
(ephemeral X25519 + HKDF + AES-256-GCM), so mailboxes can be created while the key file is absent,
and only presenting the key file again opens the wrap.

Every wrap binds the mailbox id and its purpose as associated data: a wrap copied onto another
mailbox's row does not open.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ddmail_common.config import Argon2Settings

PASSWORD_WRAP = 1
RECOVERY_WRAP = 2
_HEADER = struct.Struct(">BIIB16s12s")  # kind, memory_kib, time_cost, parallelism, salt, nonce
_RECOVERY_HEADER = struct.Struct(">B32s12s")  # kind, ephemeral public key, nonce


class WrongSecret(Exception):
    """The password or key-file secret does not open this wrap."""


def derive(secret: bytes, salt: bytes, params: Argon2Settings) -> bytes:
    return hash_secret_raw(
        secret=secret,
        salt=salt,
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=32,
        type=Type.ID,
    )


def _aad(mailbox_id: str, header: bytes) -> bytes:
    return b"ddmail-key-wrap/v1\x00" + mailbox_id.encode() + b"\x00" + header


def wrap_with_password(
    private_pem: bytes, password: str, mailbox_id: str, params: Argon2Settings
) -> bytes:
    salt, nonce = os.urandom(16), os.urandom(12)
    header = _HEADER.pack(
        PASSWORD_WRAP, params.memory_kib, params.time_cost, params.parallelism, salt, nonce
    )
    kek = derive(password.encode(), salt, params)
    return header + AESGCM(kek).encrypt(nonce, private_pem, _aad(mailbox_id, header))


def unwrap_with_password(blob: bytes, password: str, mailbox_id: str) -> bytes:
    header = blob[: _HEADER.size]
    kind, memory, time_cost, parallelism, salt, nonce = _HEADER.unpack(header)
    if kind != PASSWORD_WRAP:
        raise WrongSecret
    params = Argon2Settings(memory_kib=memory, time_cost=time_cost, parallelism=parallelism)
    kek = derive(password.encode(), salt, params)
    try:
        return AESGCM(kek).decrypt(nonce, blob[_HEADER.size :], _aad(mailbox_id, header))
    except InvalidTag:
        raise WrongSecret from None


@dataclass(frozen=True)
class RecoveryKey:
    """The public half of an account's recovery key and how to re-derive the private half."""

    public: bytes
    salt: bytes
    params: Argon2Settings

    @classmethod
    def create(cls, secret: bytes, params: Argon2Settings) -> RecoveryKey:
        salt = os.urandom(16)
        private = X25519PrivateKey.from_private_bytes(derive(secret, salt, params))
        return cls(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw), salt, params)

    def private_key(self, secret: bytes) -> X25519PrivateKey:
        private = X25519PrivateKey.from_private_bytes(derive(secret, self.salt, self.params))
        if private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) != self.public:
            raise WrongSecret
        return private


def _recovery_kek(shared: bytes, ephemeral: bytes, recipient: bytes, mailbox_id: str) -> bytes:
    info = b"ddmail-recovery/v1\x00" + mailbox_id.encode() + ephemeral + recipient
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(shared)


def wrap_for_recovery(private_pem: bytes, recovery: RecoveryKey, mailbox_id: str) -> bytes:
    ephemeral = X25519PrivateKey.generate()
    eph_pub = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recovery.public))
    nonce = os.urandom(12)
    header = _RECOVERY_HEADER.pack(RECOVERY_WRAP, eph_pub, nonce)
    kek = _recovery_kek(shared, eph_pub, recovery.public, mailbox_id)
    return header + AESGCM(kek).encrypt(nonce, private_pem, _aad(mailbox_id, header))


def unwrap_for_recovery(
    blob: bytes, private: X25519PrivateKey, recipient: bytes, mailbox_id: str
) -> bytes:
    header = blob[: _RECOVERY_HEADER.size]
    kind, eph_pub, nonce = _RECOVERY_HEADER.unpack(header)
    if kind != RECOVERY_WRAP:
        raise WrongSecret
    shared = private.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    kek = _recovery_kek(shared, eph_pub, recipient, mailbox_id)
    try:
        return AESGCM(kek).decrypt(nonce, blob[_RECOVERY_HEADER.size :], _aad(mailbox_id, header))
    except InvalidTag:
        raise WrongSecret from None

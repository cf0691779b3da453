"""Envelope encryption for small secrets kept in the database, such as TOTP secrets.

Each secret is encrypted under a random data key of its own, and only that data key is encrypted
("wrapped") under a master key, which lives in a file and never in the database. A database
dump alone therefore opens nothing, and rotating the master key means re-wrapping 60-byte data
keys, not re-encrypting every secret.

The master key file holds one key per line, ``KEYID:BASE64(32 bytes)``. The last line is the
current key, used for all new seals; earlier lines stay so that older seals still open. Rotation:

1. ``rotate_file`` appends a new current key; restart the services so that they load it.
2. ``rewrap`` every stored seal whose ``key_id`` is not ``current_id``.
3. Once none is left, delete the old lines from the file by hand.

Run one rotation at a time: two at once each append to the file as they read it, and the later
replace drops the other's key.

The context names what a seal belongs to (e.g. ``b"totp:alice"``). It is authenticated, so a
seal copied into another account's row does not open there.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ddmail_common.files import create_new

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
VERSION = 1
_WRAPPED_DEK_BYTES = NONCE_BYTES + KEY_BYTES + TAG_BYTES
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Others may neither read nor write nor enter it; the group may read (the service's group), but
# not write, or its members could slip in a current key of their own choosing.
_FORBIDDEN_MODE = stat.S_IWGRP | stat.S_IRWXO


class EnvelopeError(Exception):
    """A seal does not open: wrong context, unknown or wrong master key, or damaged data."""


class KeyFileError(Exception):
    """The master key file is unusable. Messages name the line but never show key material."""


@dataclass(frozen=True)
class MasterKeys:
    """Master keys by id, in file order; ``current_id`` seals, all of them open."""

    keys: dict[str, bytes] = field(repr=False)
    current_id: str

    def __post_init__(self) -> None:
        if self.current_id not in self.keys:
            raise ValueError("the current key id is not among the keys")
        if any(len(key) != KEY_BYTES for key in self.keys.values()):
            raise ValueError(f"master keys are {KEY_BYTES} bytes")

    @classmethod
    def load(cls, path: Path) -> MasterKeys:
        return cls._parse(path, _read_key_file(path)[1])

    @classmethod
    def _parse(cls, path: Path, data: bytes) -> MasterKeys:
        keys: dict[str, bytes] = {}
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise KeyFileError(f"{path}: not an ASCII text file") from None
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            key_id, sep, encoded = line.partition(":")
            if not sep or not _KEY_ID.fullmatch(key_id):
                raise KeyFileError(
                    f"{path}, line {number}: expected KEYID:BASE64 with a KEYID of 1 to 64"
                    " letters, digits, '-' or '_'"
                )
            if key_id in keys:
                raise KeyFileError(f"{path}, line {number}: key id {key_id!r} appears twice")
            try:
                key = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                raise KeyFileError(f"{path}, line {number}: the key is not valid base64") from None
            if len(key) != KEY_BYTES:
                raise KeyFileError(
                    f"{path}, line {number}: the key is {len(key)} bytes, expected {KEY_BYTES}"
                )
            keys[key_id] = key
        if not keys:
            raise KeyFileError(f"{path}: holds no key")
        return cls(keys, current_id=next(reversed(keys)))

    @staticmethod
    def generate_file(path: Path) -> str:
        """Create a key file (mode 0600) with one new key; refuse to replace an existing one,
        which would make every seal under its keys unreadable. Returns the key id."""
        key_id = _new_key_id(set())
        create_new(path, _key_line(key_id), 0o600)
        _fsync_dir(path.parent)
        return key_id

    @classmethod
    def rotate_file(cls, path: Path) -> str:
        """Append a new current key to the file atomically and return its id.

        The file is replaced as a whole, so a crash leaves the old or the new file, never half
        of one. The new file keeps the old one's owner, group and mode, lest the service lose
        access because an operator rotated as root.
        """
        st, data = _read_key_file(path)
        key_id = _new_key_id(set(cls._parse(path, data).keys))  # never rotate a broken file
        if data and not data.endswith(b"\n"):
            data += b"\n"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
        try:
            with os.fdopen(fd, "wb") as f:
                tmp_st = os.fstat(fd)
                if (tmp_st.st_uid, tmp_st.st_gid) != (st.st_uid, st.st_gid):
                    os.fchown(fd, st.st_uid, st.st_gid)
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
                f.write(data + _key_line(key_id))
                f.flush()
                os.fsync(fd)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        return key_id

    def key(self, key_id: str) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            raise EnvelopeError(f"no master key with id {key_id!r}") from None


def _read_key_file(path: Path) -> tuple[os.stat_result, bytes]:
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())  # of the file read, not of whatever the path names later
            data = f.read()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None
    if st.st_mode & _FORBIDDEN_MODE:
        raise KeyFileError(
            f"{path}: others may read or change it (mode {stat.S_IMODE(st.st_mode):04o});"
            " use 0600 or 0640"
        )
    return st, data


def _new_key_id(taken: set[str]) -> str:
    while True:
        key_id = secrets.token_hex(8)
        if key_id not in taken:
            return key_id


def _key_line(key_id: str) -> bytes:
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}\n".encode()


def _fsync_dir(directory: Path) -> None:
    # Makes the new directory entry itself durable, not only the file's contents.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Sealed:
    """A sealed secret: the data key wrapped under master key ``key_id`` and the ciphertext,
    each as a 12-byte nonce followed by the AES-GCM output."""

    key_id: str
    wrapped_dek: bytes
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        """VERSION, len(key_id), key_id, wrapped_dek (fixed size), ciphertext (the rest)."""
        key_id = self.key_id.encode("ascii")
        return bytes([VERSION, len(key_id)]) + key_id + self.wrapped_dek + self.ciphertext

    @classmethod
    def from_bytes(cls, blob: bytes) -> Sealed:
        if len(blob) < 2 or blob[0] != VERSION:
            raise EnvelopeError("not a sealed secret of a known version")
        end_id = 2 + blob[1]
        end_dek = end_id + _WRAPPED_DEK_BYTES
        try:
            key_id = blob[2:end_id].decode("ascii")
        except UnicodeDecodeError:
            raise EnvelopeError("damaged sealed secret") from None
        if not _KEY_ID.fullmatch(key_id) or len(blob) < end_dek + NONCE_BYTES + TAG_BYTES:
            raise EnvelopeError("damaged sealed secret")
        return cls(key_id, blob[end_id:end_dek], blob[end_dek:])


def _encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _decrypt(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except InvalidTag:
        raise EnvelopeError("the sealed secret does not open with this key and context") from None


def _dek_aad(key_id: str, context: bytes) -> bytes:
    # Key ids cannot contain NUL, so the boundary between id and context is unambiguous.
    return key_id.encode("ascii") + b"\0" + context


def _wrap(keys: MasterKeys, dek: bytes, context: bytes) -> tuple[str, bytes]:
    key_id = keys.current_id
    return key_id, _encrypt(keys.key(key_id), dek, _dek_aad(key_id, context))


def _unwrap(keys: MasterKeys, sealed: Sealed, context: bytes) -> bytes:
    if len(sealed.wrapped_dek) != _WRAPPED_DEK_BYTES:
        raise EnvelopeError("damaged sealed secret")
    return _decrypt(keys.key(sealed.key_id), sealed.wrapped_dek, _dek_aad(sealed.key_id, context))


def seal(keys: MasterKeys, plaintext: bytes, context: bytes) -> Sealed:
    dek = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    key_id, wrapped = _wrap(keys, dek, context)
    return Sealed(key_id, wrapped, _encrypt(dek, plaintext, context))


def open(keys: MasterKeys, sealed: Sealed, context: bytes) -> bytes:
    return _decrypt(_unwrap(keys, sealed, context), sealed.ciphertext, context)


def rewrap(keys: MasterKeys, sealed: Sealed, context: bytes) -> Sealed:
    """The same seal with its data key wrapped under the current master key; the ciphertext is
    kept as it is. Verifies the old wrap on the way, so a damaged seal raises EnvelopeError."""
    key_id, wrapped = _wrap(keys, _unwrap(keys, sealed, context), context)
    return Sealed(key_id, wrapped, sealed.ciphertext)

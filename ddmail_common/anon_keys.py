#!/usr/bin/python3
"""The onion service's and the I2P destination's keys and addresses (issue 12), in one place.

Why here, and standard library only: roles tor and i2pd copy this very file to the host
(/usr/local/sbin/ddmail-anon-keys, role anon_keys) and run it with the system python3, before
DDMail's virtualenv exists and also inside an image built in a chroot (no daemon may run
there, no network); the local stack (ddmail_stack.anonymity) and the tests import it. So the
address of a key is computed by one piece of code wherever it is needed.

- Tor (v3 onion service): ``hs_ed25519_secret_key`` in the service directory is a 32-byte
  header and the expanded ed25519 key (clamped scalar a, then the 32-byte nonce prefix); the
  public key is a·B; the address is base32(pub ‖ SHA3-256(".onion checksum" ‖ pub ‖ 3)[:2] ‖
  3) + ".onion" (rend-spec-v3 §6). Tor reads a key written here and derives the same name.
- I2P (i2pd's keys file, as i2pd writes it for a server tunnel: signature type 7
  EdDSA-SHA512-Ed25519, crypto type 0 ElGamal-2048): the destination (256-byte ElGamal
  public key, 128-byte signing key field ending in the 32-byte ed25519 key, the key
  certificate) followed by the ElGamal private exponent and the ed25519 seed; the address is
  base32(SHA-256(destination)) + ".b32.i2p".

Keys are made here rather than by briefly running the daemons on the host: that works the
same in a chroot and never races a running tor or i2pd for its data directory. The tests
prove both ways round: the daemons accept these keys and announce our addresses, and our
computation gives the addresses of keys the daemons made themselves (the local stack's).

The ed25519 arithmetic follows RFC 8032's reference code. It is not constant-time: it runs
once per key, on the host that owns the key, where nobody else can time it.

Command line (secrets only ever on stdin, never in argv; output is one JSON object):
  ddmail-anon-keys onion-keys DIR [--import]   make (or, with --import, install the base64 of
                                               an hs_ed25519_secret_key read from stdin) the
                                               onion service's keys in DIR
  ddmail-anon-keys i2p-keys FILE [--import]    the same for i2pd's keys file FILE
  ddmail-anon-keys onion-address DIR | i2p-address FILE   the address of existing keys
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import secrets
import sys
from pathlib import Path

# --------------------------------------------------------------------------- ed25519 (RFC 8032)

_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_Point = tuple[int, int, int, int]  # extended homogeneous coordinates (X, Y, Z, T)


def _recover_x(y: int, sign: int) -> int:
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if x & 1 != sign:
        x = _P - x
    return x


_BY = 4 * pow(5, _P - 2, _P) % _P
_BX = _recover_x(_BY, 0)
_BASE: _Point = (_BX, _BY, 1, _BX * _BY % _P)


def _add(p: _Point, q: _Point) -> _Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] * _D % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f, g * h, f * g, e * h)


def _public_from_scalar(scalar: int) -> bytes:
    result: _Point = (0, 1, 1, 0)
    point = _BASE
    while scalar:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    z_inv = pow(result[2], _P - 2, _P)
    x, y = result[0] * z_inv % _P, result[1] * z_inv % _P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _expand_seed(seed: bytes) -> bytes:
    """The expanded secret key of an ed25519 seed: clamped scalar ‖ nonce prefix."""
    digest = hashlib.sha512(seed).digest()
    scalar = int.from_bytes(digest[:32], "little") & ((1 << 254) - 8) | (1 << 254)
    return scalar.to_bytes(32, "little") + digest[32:]


def ed25519_public_key(expanded: bytes) -> bytes:
    return _public_from_scalar(int.from_bytes(expanded[:32], "little"))


# --------------------------------------------------------------------------- Tor


class KeyFileError(ValueError):
    """A key file that is not what it claims to be (the message says which and why)."""


TOR_SECRET_FILE = "hs_ed25519_secret_key"  # noqa: S105 - a file name
TOR_PUBLIC_FILE = "hs_ed25519_public_key"
TOR_HOSTNAME_FILE = "hostname"
_TOR_SECRET_HEADER = b"== ed25519v1-secret: type0 ==\x00\x00\x00"
_TOR_PUBLIC_HEADER = b"== ed25519v1-public: type0 ==\x00\x00\x00"


def onion_address(public_key: bytes) -> str:
    """The v3 onion address of a 32-byte ed25519 public key."""
    version = b"\x03"
    checksum = hashlib.sha3_256(b".onion checksum" + public_key + version).digest()[:2]
    return base64.b32encode(public_key + checksum + version).decode().lower() + ".onion"


def tor_secret_key_file(expanded: bytes) -> bytes:
    return _TOR_SECRET_HEADER + expanded


def new_tor_secret_key_file() -> bytes:
    return tor_secret_key_file(_expand_seed(secrets.token_bytes(32)))


def tor_public_key(secret_key_file: bytes) -> bytes:
    """The public key of the content of an hs_ed25519_secret_key file."""
    if len(secret_key_file) != 96 or not secret_key_file.startswith(_TOR_SECRET_HEADER):
        raise KeyFileError("not a Tor v3 onion service secret key (hs_ed25519_secret_key)")
    return ed25519_public_key(secret_key_file[32:])


def onion_address_of_dir(directory: Path) -> str:
    """The address of the onion service whose keys are in DIRECTORY (from its secret key;
    a public key file that does not belong to it is an error)."""
    public = tor_public_key((directory / TOR_SECRET_FILE).read_bytes())
    public_file = directory / TOR_PUBLIC_FILE
    if public_file.exists() and public_file.read_bytes() != _TOR_PUBLIC_HEADER + public:
        raise KeyFileError(f"{public_file} does not belong to the secret key next to it")
    return onion_address(public)


def install_onion_keys(directory: Path, secret_key_file: bytes | None) -> tuple[str, bool]:
    """Make DIRECTORY hold an onion service's keys: SECRET_KEY_FILE's content if given, else
    the keys already there, else new ones; the public key and hostname Tor would write next
    to them. Returns the address and whether anything was written."""
    secret_path = directory / TOR_SECRET_FILE
    if secret_key_file is None:
        secret_key_file = secret_path.read_bytes() if secret_path.exists() else None
        secret_key_file = secret_key_file or new_tor_secret_key_file()
    public = tor_public_key(secret_key_file)
    address = onion_address(public)
    changed = False
    for name, content in (
        (TOR_SECRET_FILE, secret_key_file),
        (TOR_PUBLIC_FILE, _TOR_PUBLIC_HEADER + public),
        (TOR_HOSTNAME_FILE, f"{address}\n".encode()),
    ):
        changed |= _write_if_different(directory / name, content)
    return address, changed


# --------------------------------------------------------------------------- I2P

# The 2048-bit MODP group of RFC 3526 (§3), generator 2: I2P's ElGamal group.
ELGAMAL_PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
    "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
    "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
    "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
    "F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6"
    "955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)
_CERT_KEY = 5  # key certificate: signing and crypto type follow
_SIG_EDDSA_SHA512_ED25519 = 7
_CRYPTO_ELGAMAL = 0
_IDENTITY_KEYS = 384  # 256-byte public key field + 128-byte signing key field
_ELGAMAL_PRIVATE = 256
_ED25519_SEED = 32


def i2p_destination(keys_file: bytes) -> bytes:
    """The destination (public part) at the start of an i2pd keys file."""
    if len(keys_file) < _IDENTITY_KEYS + 3:
        raise KeyFileError("not an i2pd keys file: too short")
    cert_len = int.from_bytes(keys_file[_IDENTITY_KEYS + 1 : _IDENTITY_KEYS + 3], "big")
    return keys_file[: _IDENTITY_KEYS + 3 + cert_len]


def i2p_address(destination: bytes) -> str:
    """The .b32.i2p name of a destination."""
    digest = hashlib.sha256(destination).digest()
    return base64.b32encode(digest).decode().lower().rstrip("=") + ".b32.i2p"


def check_i2p_keys(keys_file: bytes) -> str:
    """The address of an i2pd keys file of the types i2pd makes for server tunnels (and we
    make); anything else, or a file whose keys do not belong together, is refused."""
    destination = i2p_destination(keys_file)
    cert = destination[_IDENTITY_KEYS:]
    expected = bytes([_CERT_KEY]) + (4).to_bytes(2, "big")
    expected += _SIG_EDDSA_SHA512_ED25519.to_bytes(2, "big") + _CRYPTO_ELGAMAL.to_bytes(2, "big")
    if cert != expected:
        raise KeyFileError("i2pd keys file of another type than EdDSA-Ed25519 with ElGamal")
    if len(keys_file) != len(destination) + _ELGAMAL_PRIVATE + _ED25519_SEED:
        raise KeyFileError("i2pd keys file of the wrong length")
    # The ElGamal pair is not checked: i2pd fills both fields of a destination it makes with
    # random bytes (its lease sets carry the encryption keys), so they need not match.
    ed25519_public = ed25519_public_key(_expand_seed(keys_file[-_ED25519_SEED:]))
    if destination[_IDENTITY_KEYS - 32 : _IDENTITY_KEYS] != ed25519_public:
        raise KeyFileError("i2pd keys file: the signing keys do not belong together")
    return i2p_address(destination)


def new_i2p_keys_file() -> bytes:
    """A keys file as i2pd makes it for a server tunnel (signature type 7, crypto type 0), but
    with a real ElGamal pair where i2pd puts random bytes: should a lease set ever be
    configured to use the destination's own key, it works."""
    elgamal_private = secrets.randbelow(ELGAMAL_PRIME - 3) + 2
    elgamal_public = pow(2, elgamal_private, ELGAMAL_PRIME).to_bytes(256, "big")
    seed = secrets.token_bytes(_ED25519_SEED)
    ed25519_public = ed25519_public_key(_expand_seed(seed))
    # The signing key field is 128 bytes; a shorter key sits at its end after random padding.
    padding = secrets.token_bytes(128 - len(ed25519_public))
    cert = bytes([_CERT_KEY]) + (4).to_bytes(2, "big")
    cert += _SIG_EDDSA_SHA512_ED25519.to_bytes(2, "big") + _CRYPTO_ELGAMAL.to_bytes(2, "big")
    destination = elgamal_public + padding + ed25519_public + cert
    return destination + elgamal_private.to_bytes(_ELGAMAL_PRIVATE, "big") + seed


def install_i2p_keys(path: Path, keys_file: bytes | None) -> tuple[str, bool]:
    """Make PATH i2pd's keys file: KEYS_FILE if given, else the one there, else a new one.
    Returns the address and whether anything was written."""
    if keys_file is None:
        keys_file = path.read_bytes() if path.exists() else new_i2p_keys_file()
    address = check_i2p_keys(keys_file)
    return address, _write_if_different(path, keys_file)


# --------------------------------------------------------------------------- files


def _write_if_different(path: Path, content: bytes) -> bool:
    """Write PATH atomically, mode 0600, owned by the owner of its directory (tor's or i2pd's
    account: the role makes the directory theirs); False if it already holds CONTENT."""
    if path.exists() and path.read_bytes() == content:
        return False
    owner = path.parent.stat()
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, content)
        os.fchmod(fd, 0o600)
        if os.geteuid() == 0:
            os.fchown(fd, owner.st_uid, owner.st_gid)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return True


def _read_imported_key() -> bytes:
    """The base64 of a key file, on stdin (a secret never goes into argv)."""
    try:
        return base64.b64decode("".join(sys.stdin.read().split()), validate=True)
    except binascii.Error as exc:
        raise KeyFileError("the key on stdin is not base64") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ddmail-anon-keys", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("onion-keys", "i2p-keys"):
        cmd = sub.add_parser(name)
        cmd.add_argument("path", type=Path)
        cmd.add_argument("--import", dest="imported", action="store_true")
    for name in ("onion-address", "i2p-address"):
        sub.add_parser(name).add_argument("path", type=Path)
    args = parser.parse_args(argv)
    path: Path = args.path
    changed = False
    try:
        if args.command == "onion-keys":
            imported = _read_imported_key() if args.imported else None
            address, changed = install_onion_keys(path, imported)
        elif args.command == "i2p-keys":
            imported = _read_imported_key() if args.imported else None
            address, changed = install_i2p_keys(path, imported)
        elif args.command == "onion-address":
            address = onion_address_of_dir(path)
        else:
            address = check_i2p_keys(path.read_bytes())
    except (KeyFileError, OSError) as exc:
        print(f"ddmail-anon-keys: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"address": address, "changed": changed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

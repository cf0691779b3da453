"""Web Key Directory: the activated OpenPGP key of a mailbox, found the way mail clients ask
(draft-koch-openpgp-webkey-service: z-base-32 of the SHA-1 of the lower-cased local part).

What is published for an address is the key with only the user IDs that name that address:
the owner's other addresses and names on the same key are not the directory's business. A key
without a (non-revoked) user ID for the address is not published at all (clients would discard
it anyway). The filtering works on the packets here, so no user data reaches a gpg argv."""

from __future__ import annotations

import hashlib
import json

from ddmail_common.db import Database
from ddmail_keyhandler.openpgp_keys import (
    PUBLIC_KEY,
    PUBLIC_SUBKEY,
    SIGNATURE,
    USER_ATTRIBUTE,
    USER_ID,
    active_keys,
    packets,
    upload_bytes,
)
from ddmail_keyhandler.openpgp_models import OpenPgpActivation, OpenPgpKey
from ddmail_keyhandler.openpgp_uids import uid_address, uids_for

ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"


def zbase32(data: bytes) -> str:
    bits = "".join(f"{byte:08b}" for byte in data)
    bits += "0" * (-len(bits) % 5)
    return "".join(ZBASE32[int(bits[i : i + 5], 2)] for i in range(0, len(bits), 5))


def wkd_hash(local_part: str) -> str:
    return zbase32(hashlib.sha1(local_part.lower().encode()).digest())  # noqa: S324 - the spec's


def _packet(tag: int, body: bytes) -> bytes:
    """One packet in the new format (RFC 9580 §4.2.1)."""
    n = len(body)
    if n < 192:
        length = bytes([n])
    elif n < 8384:
        length = bytes([((n - 192) >> 8) + 192, (n - 192) & 0xFF])
    else:
        length = b"\xff" + n.to_bytes(4, "big")
    return bytes([0xC0 | tag]) + length + body


def only_uids_of(data: bytes, address: str) -> bytes:
    """The binary key DATA keeping, of its user IDs, only those naming ADDRESS (with their
    signatures); the primary key, its direct signatures and the subkeys stay; user attributes
    (photos) and every other user ID go."""
    kept: list[bytes] = []
    keep = False
    for tag, body in packets(data):
        if tag in (PUBLIC_KEY, PUBLIC_SUBKEY):
            keep = True
        elif tag == USER_ID:
            keep = uid_address(body.decode("utf-8", errors="replace")) == address.lower()
        elif tag == USER_ATTRIBUTE:
            keep = False  # a photo: not published
        elif tag != SIGNATURE:
            continue  # marker, trust, padding: nothing a key needs
        if keep:
            kept.append(_packet(tag, body))
    return b"".join(kept)


def published_key(db: Database, domain: str, hashed: str) -> bytes | None:
    """The binary key to serve for HASHED at DOMAIN, or None. Only activated keys of live
    mailboxes are published: deactivation or removal takes the key off the directory."""
    with db.session() as s:
        rows = s.execute(
            active_keys(OpenPgpActivation.address, OpenPgpKey.public_key, OpenPgpKey.uids).where(
                OpenPgpActivation.address.like(f"%@{domain}")
            )
        ).all()
    for address, armored, uids in rows:
        local, _, at_domain = str(address).rpartition("@")
        if at_domain == domain and wkd_hash(local) == hashed:
            if not uids_for(str(address), json.loads(uids)):
                return None
            return only_uids_of(upload_bytes(str(armored)), str(address))
    return None

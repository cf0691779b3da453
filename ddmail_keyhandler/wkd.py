"""Web Key Directory: the activated OpenPGP key of a mailbox, found the way mail clients ask
(draft-koch-openpgp-webkey-service: z-base-32 of the SHA-1 of the lower-cased local part)."""

from __future__ import annotations

import hashlib

from ddmail_common.db import Database
from ddmail_keyhandler.openpgp_keys import active_keys, upload_bytes
from ddmail_keyhandler.openpgp_models import OpenPgpActivation, OpenPgpKey

ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"


def zbase32(data: bytes) -> str:
    bits = "".join(f"{byte:08b}" for byte in data)
    bits += "0" * (-len(bits) % 5)
    return "".join(ZBASE32[int(bits[i : i + 5], 2)] for i in range(0, len(bits), 5))


def wkd_hash(local_part: str) -> str:
    return zbase32(hashlib.sha1(local_part.lower().encode()).digest())  # noqa: S324 - the spec's


def published_key(db: Database, domain: str, hashed: str) -> bytes | None:
    """The binary key to serve for HASHED at DOMAIN, or None. Only activated keys of live
    mailboxes are published: deactivation or removal takes the key off the directory."""
    with db.session() as s:
        rows = s.execute(
            active_keys(OpenPgpActivation.address, OpenPgpKey.public_key).where(
                OpenPgpActivation.address.like(f"%@{domain}")
            )
        ).all()
    for address, armored in rows:
        local, _, at_domain = str(address).rpartition("@")
        if at_domain == domain and wkd_hash(local) == hashed:
            return upload_bytes(str(armored))
    return None

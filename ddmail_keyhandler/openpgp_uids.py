"""The mail address a user ID names, as gpg reads it (its "mbox"): the part in angle brackets,
or the whole user ID when it is a bare address; lower-cased. Used to decide which user IDs the
Web Key Directory publishes for a mailbox, and to tell the owner which one that is."""

from __future__ import annotations

import re

_BRACKETED = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
_BARE = re.compile(r"[^<>\s@]+@[^<>\s@]+")


def uid_address(uid: str) -> str | None:
    bracketed = _BRACKETED.search(uid)
    if bracketed is not None:
        return bracketed.group(1).lower()
    bare = uid.strip()
    return bare.lower() if _BARE.fullmatch(bare) else None


def uids_for(address: str, uids: list[str]) -> list[str]:
    """The user IDs among UIDS that name ADDRESS."""
    return [uid for uid in uids if uid_address(uid) == address.lower()]

"""Re-authentication: sensitive forms carry the user's key file again."""

from __future__ import annotations

from typing import Any

from flask import g

from ddmail_web.credentials import KeyFile
from ddmail_web.models import User
from ddmail_web.state import web


def presented_keyfile(upload: Any) -> tuple[User, KeyFile] | None:
    """The logged-in user and the key file from UPLOAD, if it is that user's key file."""
    keyfile = KeyFile.parse(upload.read(4097)) if upload is not None else None
    with web().db.session() as s:
        user = s.get(User, g.user.id)
    if user is None or keyfile is None or not keyfile.matches(user.keyfile_digest):
        return None
    return user, keyfile


def recovery_secret(user: User, keyfile: KeyFile) -> str | None:
    return keyfile.unseal(user.username, user.recovery_sealed)

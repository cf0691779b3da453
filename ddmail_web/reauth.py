"""Re-authentication: forms of actions that cannot be undone carry the user's key file again.

The rule is enforced where routes declare who may use them: a route declared
``access("reauthenticated")`` refuses every POST whose multipart field ``key`` is not the logged-in
user's key file, before its view runs (``refused_without_keyfile``). A view therefore never has to
remember the check, and the route audit test finds every route that removes or deletes something
and proves by posting to it that it is refused without the key file.
"""

from __future__ import annotations

from typing import Any

from flask import g, render_template, request

from ddmail_web.credentials import KeyFile
from ddmail_web.models import User
from ddmail_web.state import web

KEY_FIELD = "key"
KEYFILE_NEEDED = (
    "No key file was chosen, or it is not yours. This cannot be undone, so it needs your key "
    "file again. Nothing was changed: go back, choose your key file and try again."
)


def presented_keyfile(upload: Any) -> tuple[User, KeyFile] | None:
    """The logged-in user and the key file from UPLOAD, if it is that user's key file. Once the
    route's rule has checked the request's key file, that result is returned (the upload's
    stream has been read by then)."""
    checked = g.get("reauthenticated")
    if checked is not None:
        return checked  # type: ignore[no-any-return]
    keyfile = KeyFile.parse(upload.read(4097)) if upload is not None else None
    with web().db.session() as s:
        user = s.get(User, g.user.id)
    if user is None or keyfile is None or not keyfile.matches(user.keyfile_digest):
        return None
    return user, keyfile


def refused_without_keyfile() -> tuple[str, int] | None:
    """For a POST to a reauthenticated route: an error page if the request does not carry the
    user's key file, else None (and the user and key file are kept for the view)."""
    if request.method != "POST":
        return None
    found = presented_keyfile(request.files.get(KEY_FIELD))
    if found is None:
        return render_template("error.html", title="Key file needed", message=KEYFILE_NEEDED), 403
    g.reauthenticated = found
    return None


def verified() -> tuple[User, KeyFile]:
    """The user and key file the route's rule accepted (only inside a reauthenticated POST)."""
    found: tuple[User, KeyFile] = g.reauthenticated
    return found


def recovery_secret(user: User, keyfile: KeyFile) -> str | None:
    return keyfile.unseal(user.username, user.recovery_sealed)

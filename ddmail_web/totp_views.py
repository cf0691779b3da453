"""Optional TOTP for panel logins: the secret is shown once as text and as a server-rendered QR
image, stored sealed under the master key, and every code works only once. Turning codes on or
off needs the key file; a secret being set up stays on the server, with the session."""

from __future__ import annotations

import time

from flask import Blueprint, flash, g, make_response, redirect, render_template, url_for
from werkzeug.wrappers import Response

from ddmail_web import audit, envelope, lockout, totp
from ddmail_web.forms import TotpForm
from ddmail_web.models import Session, User
from ddmail_web.reauth import presented_keyfile
from ddmail_web.sessions import access
from ddmail_web.state import web

bp = Blueprint("totp", __name__, url_prefix="/settings")


def context(user_id: int) -> bytes:
    return f"ddmail-totp/v1\x00{user_id}".encode()


def open_secret(user: User) -> str | None:
    keys = web().master_keys()
    if user.totp_sealed is None or keys is None:
        return None
    sealed = envelope.Sealed.from_bytes(user.totp_sealed)
    return envelope.open(keys, sealed, context(user.id)).decode()


def check_code(user: User, code: str) -> bool:
    """For login: True if TOTP is off, or CODE is a fresh valid code (then it is used up)."""
    if user.totp_sealed is None:
        return True
    secret = open_secret(user)
    step = totp.verify(secret, code, int(time.time()), user.totp_last_step) if secret else None
    if step is None:
        return False
    with web().db.session() as s:
        row = s.get(User, user.id)
        if row is None or (row.totp_last_step or -1) >= step:
            return False  # used meanwhile by a concurrent login
        row.totp_last_step = step
    return True


def _pending_context(session_id: int) -> bytes:
    return f"ddmail-totp-pending/v1\x00{session_id}".encode()


def _pending(keys: envelope.MasterKeys, create: bool) -> str | None:
    """The secret being set up in this session (a new one if CREATE and there is none). It is
    kept on the session's row, sealed, so it ends with the session."""
    with web().db.session() as s:
        row = s.get(Session, g.session_id)
        if row is None:
            return None
        if row.totp_pending is not None:
            try:
                sealed = envelope.Sealed.from_bytes(row.totp_pending)
                return envelope.open(keys, sealed, _pending_context(row.id)).decode()
            except envelope.EnvelopeError:
                pass  # sealed under a master key since removed: start again
        if not create:
            return None
        secret = totp.new_secret()
        sealed = envelope.seal(keys, secret.encode(), _pending_context(row.id))
        row.totp_pending = sealed.to_bytes()
        return secret


def _change(user: User, code: str, keys: envelope.MasterKeys) -> str | None:
    """Turn TOTP off (CODE from the current secret) or on (CODE from the pending one); the
    flash message, or None if the code was not right."""
    state = web()
    if user.totp_sealed is not None:
        with state.db.session() as s:
            if lockout.locked(s, state.settings, user.username):
                return None
        if not check_code(user, code):
            # Counted like a wrong code at login: the key file was right, only the code is
            # being guessed.
            with state.db.session() as s:
                lockout.failed(s, user.username)
                audit.append(s, user.account, user.username, "totp_failed")
            return None
        with state.db.session() as s:
            row = s.get(User, user.id)
            assert row is not None
            row.totp_sealed, row.totp_last_step = None, None
            audit.append(s, user.account, user.username, "totp_disabled")
        return "One-time codes are off."
    secret = _pending(keys, create=False)
    step = totp.verify(secret, code, int(time.time()), None) if secret else None
    if secret is None or step is None:
        return None
    sealed = envelope.seal(keys, secret.encode(), context(user.id))
    with state.db.session() as s:
        row = s.get(User, user.id)
        assert row is not None
        row.totp_sealed, row.totp_last_step = sealed.to_bytes(), step
        audit.append(s, user.account, user.username, "totp_enabled")
        session_row = s.get(Session, g.session_id)
        if session_row is not None:
            session_row.totp_pending = None
    return "One-time codes are on. You need one at every login."


@bp.route("/totp", methods=["GET", "POST"])
@access("authenticated")
def settings() -> Response | str | tuple[str, int]:
    form = TotpForm()
    keys = web().master_keys()
    with web().db.session() as s:
        user = s.get(User, g.user.id)
    assert user is not None
    if keys is None:
        flash("One-time codes are not available on this server.", "error")
        return render_template("account/totp.html", enabled=False, secret=None, form=form), 503
    if form.validate_on_submit():
        # Turning codes on or off needs the key file: a session alone is not enough.
        proven = presented_keyfile(form.key.data)
        done = _change(proven[0], form.totp.data, keys) if proven is not None else None
        if done is not None:
            flash(done, "success")
            return redirect(url_for("totp.settings"))
        if proven is None:
            flash("That is not your key file.", "error")
        else:
            flash("That code is not right; try the current one.", "error")
        with web().db.session() as s:
            user = s.get(User, g.user.id)
        assert user is not None
    enabled = user.totp_sealed is not None
    secret = None if enabled else _pending(keys, create=True)
    response = make_response(
        render_template("account/totp.html", enabled=enabled, secret=secret, form=form)
    )
    response.headers["Cache-Control"] = "no-store"
    response.status_code = 400 if form.errors else 200
    return response


@bp.get("/totp/qr.png")
@access("authenticated")
def qr() -> Response:
    keys = web().master_keys()
    secret = _pending(keys, create=False) if keys is not None else None
    if not secret:
        return make_response(("No code is being set up.", 404))
    uri = totp.provisioning_uri(secret, f"{g.user.username}@{web().settings.global_domain}")
    response = make_response(totp.qr_png(uri))
    response.headers["Content-Type"] = "image/png"
    response.headers["Cache-Control"] = "no-store"
    return response

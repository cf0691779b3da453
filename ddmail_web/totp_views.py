"""Optional TOTP for panel logins: the secret is shown once as text and as a server-rendered QR
image, stored sealed under the master key, and every code works only once."""

from __future__ import annotations

import time

from flask import Blueprint, flash, g, make_response, redirect, render_template, session, url_for
from werkzeug.wrappers import Response

from ddmail_web import audit, envelope, totp
from ddmail_web.forms import TotpForm
from ddmail_web.models import User
from ddmail_web.sessions import access
from ddmail_web.state import web

bp = Blueprint("totp", __name__, url_prefix="/settings")
PENDING = "totp_pending"  # in Flask's signed cookie: the secret is the user's own, shown anyway


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


@bp.route("/totp", methods=["GET", "POST"])
@access("authenticated")
def settings() -> Response | str | tuple[str, int]:
    form = TotpForm()
    keys = web().master_keys()
    with web().db.session() as s:
        user = s.get(User, g.user.id)
    assert user is not None
    enabled = user.totp_sealed is not None
    if keys is None:
        flash("One-time codes are not available on this server.", "error")
        return render_template("account/totp.html", enabled=False, secret=None, form=form), 503
    if form.validate_on_submit():
        now = int(time.time())
        if enabled:
            if check_code(user, form.totp.data):
                with web().db.session() as s:
                    row = s.get(User, user.id)
                    assert row is not None
                    row.totp_sealed, row.totp_last_step = None, None
                    audit.append(s, g.account.id, g.user.username, "totp_disabled")
                flash("One-time codes are off.", "success")
                return redirect(url_for("totp.settings"))
        else:
            secret = session.get(PENDING)
            step = totp.verify(secret, form.totp.data, now, None) if secret else None
            if secret and step is not None:
                sealed = envelope.seal(keys, secret.encode(), context(user.id))
                with web().db.session() as s:
                    row = s.get(User, user.id)
                    assert row is not None
                    row.totp_sealed, row.totp_last_step = sealed.to_bytes(), step
                    audit.append(s, g.account.id, g.user.username, "totp_enabled")
                session.pop(PENDING, None)
                flash("One-time codes are on. You need one at every login.", "success")
                return redirect(url_for("totp.settings"))
        flash("That code is not right; try the current one.", "error")
    secret = None
    if not enabled:
        secret = session.get(PENDING) or totp.new_secret()
        session[PENDING] = secret
    response = make_response(
        render_template("account/totp.html", enabled=enabled, secret=secret, form=form)
    )
    response.headers["Cache-Control"] = "no-store"
    response.status_code = 400 if form.errors else 200
    return response


@bp.get("/totp/qr.png")
@access("authenticated")
def qr() -> Response:
    secret = session.get(PENDING)
    if not secret:
        return make_response(("No code is being set up.", 404))
    uri = totp.provisioning_uri(secret, f"{g.user.username}@{web().settings.global_domain}")
    response = make_response(totp.qr_png(uri))
    response.headers["Content-Type"] = "image/png"
    response.headers["Cache-Control"] = "no-store"
    return response

"""The account's users, and a user's own password and key file."""

from __future__ import annotations

import time

from flask import Blueprint, flash, g, make_response, redirect, render_template, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from ddmail_web import audit
from ddmail_web.account import offer_keyfile, set_keyfile_cookie
from ddmail_web.credentials import KeyFile, new_password, new_username
from ddmail_web.forms import KeyFileForm, RemoveUserForm
from ddmail_web.models import User
from ddmail_web.reauth import recovery_secret, verified
from ddmail_web.sessions import access, end_sessions
from ddmail_web.state import web

bp = Blueprint("users", __name__, url_prefix="/settings")
NOT_YOUR_KEYFILE = "That is not your key file; nothing was changed."


def _download(keyfile: bytes, username: str) -> Response:
    response = make_response(keyfile)
    response.headers["Content-Type"] = "application/octet-stream"
    response.headers["Content-Disposition"] = f'attachment; filename="ddmail-{username}.key"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/users", methods=["GET", "POST"])
@access("reauthenticated")
def users() -> Response | str | tuple[str, int]:
    form = KeyFileForm()
    if form.validate_on_submit():
        secret = recovery_secret(*verified())
        if secret is None:
            flash(NOT_YOUR_KEYFILE, "error")
            return redirect(url_for("users.users"))
        username, password, keyfile = new_username(), new_password(), KeyFile.generate()
        state = web()
        with state.db.session() as s:
            s.add(
                User(
                    account=g.account.id,
                    username=username,
                    password_hash=state.passwords.hash(password),
                    keyfile_digest=keyfile.digest(),
                    recovery_sealed=keyfile.seal(username, secret),
                    totp_sealed=None,
                    totp_last_step=None,
                    created_at=int(time.time()),
                )
            )
            token = offer_keyfile(s, username, keyfile.render(g.account.id, username))
            audit.append(s, g.account.id, g.user.username, "user_added", username)
        response = make_response(
            render_template(
                "account/new_user.html",
                account=g.account.id,
                username=username,
                password=password,
            )
        )
        response.headers["Cache-Control"] = "no-store"
        set_keyfile_cookie(response, token)
        return response
    with web().db.session() as s:
        rows = (
            s.execute(select(User).where(User.account == g.account.id).order_by(User.username))
            .scalars()
            .all()
        )
    return render_template("account/users.html", rows=rows, form=form)


@bp.post("/users/remove")
@access("reauthenticated")
def remove_user() -> Response:
    form = RemoveUserForm()
    if not form.validate_on_submit():
        flash("Choose a user to remove.", "error")
        return redirect(url_for("users.users"))
    if form.user.data == g.user.username:
        flash("You cannot remove yourself; another user of the account can.", "error")
        return redirect(url_for("users.users"))
    with web().db.session() as s:
        user = s.execute(
            select(User).where(User.username == form.user.data, User.account == g.account.id)
        ).scalar()
        if user is None:
            flash("No such user in this account.", "error")
            return redirect(url_for("users.users"))
        s.delete(user)  # its sessions go with it (ON DELETE CASCADE)
        audit.append(s, g.account.id, g.user.username, "user_removed", user.username)
    flash(f"{form.user.data} is removed and logged out everywhere.", "success")
    return redirect(url_for("users.users"))


@bp.post("/password")
@access("reauthenticated")
def new_panel_password() -> Response | str:
    if not KeyFileForm().validate_on_submit():
        flash(NOT_YOUR_KEYFILE, "error")
        return redirect(url_for("settings.menu"))
    password = new_password()
    state = web()
    with state.db.session() as s:
        user = s.get(User, g.user.id)
        assert user is not None
        user.password_hash = state.passwords.hash(password)
        audit.append(s, g.account.id, g.user.username, "password_changed")
    end_sessions(g.user.id, keep=g.session_id)
    response = make_response(render_template("account/new_password.html", password=password))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/keyfile")
@access("reauthenticated")
def new_keyfile() -> Response:
    secret = recovery_secret(*verified()) if KeyFileForm().validate_on_submit() else None
    if secret is None:
        flash(NOT_YOUR_KEYFILE, "error")
        return redirect(url_for("settings.menu"))
    keyfile = KeyFile.generate()
    with web().db.session() as s:
        user = s.get(User, g.user.id)
        assert user is not None
        user.keyfile_digest = keyfile.digest()
        user.recovery_sealed = keyfile.seal(user.username, secret)
        audit.append(s, g.account.id, g.user.username, "keyfile_changed")
    end_sessions(g.user.id, keep=g.session_id)
    return _download(keyfile.render(g.account.id, g.user.username), g.user.username)

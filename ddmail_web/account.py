"""Registration, login, logout and the user's own sessions."""

from __future__ import annotations

import hashlib
import os
import secrets
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import (
    Blueprint,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import delete, select
from sqlalchemy.orm import Session as DbSession
from werkzeug.wrappers import Response

from ddmail_common.errors import ApiError
from ddmail_web import audit, totp_views
from ddmail_web.credentials import (
    KeyFile,
    new_account_id,
    new_password,
    new_payment_reference,
    new_recovery_secret,
    new_username,
)
from ddmail_web.forms import EmptyForm, LoginForm, RevokeForm
from ddmail_web.models import Account, PendingKeyfile, Session, User
from ddmail_web.sessions import access, live, start_session, token_hash
from ddmail_web.state import web
from ddmail_web.throttle import count, hit

bp = Blueprint("account", __name__)
REG_COOKIE = "__Host-ddmail_registration"
PENDING_SECONDS = 1800
LOGIN_WINDOW = 900
GLOBAL_FAILURES = "login-failures-global"
LOGIN_FAILED = "Login failed: the username, password, key file or code is not right."


def _seal_for_browser(token: str, data: bytes) -> bytes:
    key = hashlib.sha256(b"ddmail-pending-keyfile/v1\x00" + token.encode()).digest()
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, data, None)


def _open_for_browser(token: str, sealed: bytes) -> bytes | None:
    key = hashlib.sha256(b"ddmail-pending-keyfile/v1\x00" + token.encode()).digest()
    try:
        return AESGCM(key).decrypt(sealed[:12], sealed[12:], None)
    except InvalidTag:
        return None


@bp.route("/register", methods=["GET", "POST"])
@access("public")
def register() -> Response | str | tuple[str, int]:
    form = EmptyForm()
    if not form.validate_on_submit():
        return render_template("account/register.html", form=form)
    state = web()
    with state.db.session() as s:
        if hit(s, "register", 3600) > state.settings.registrations_per_hour:
            return render_template("account/busy.html"), 429
    account, username, password = new_account_id(), new_username(), new_password()
    keyfile, recovery = KeyFile.generate(), new_recovery_secret()
    try:
        # The backend first: if it is down nothing is created here either.
        state.backend.call(
            "POST", "/v1/accounts/recovery-key", {"account": account, "secret": recovery}
        )
        if not state.settings.new_accounts_enabled:
            # Unfunded: its future addresses get temporary errors until funds arrive.
            state.backend.call("POST", "/v1/accounts/state", {"account": account, "enabled": False})
    except ApiError as exc:
        flash(f"Registration is not possible right now: {exc.message}", "error")
        return render_template("account/register.html", form=form), 503
    now = int(time.time())
    with state.db.session() as s:
        s.add(
            Account(
                id=account,
                created_at=now,
                enabled=state.settings.new_accounts_enabled,
                gratis=False,
                payment_reference=new_payment_reference(),
            )
        )
        s.flush()
        s.add(
            User(
                account=account,
                username=username,
                password_hash=state.passwords.hash(password),
                keyfile_digest=keyfile.digest(),
                recovery_sealed=keyfile.seal(username, recovery),
                totp_sealed=None,
                totp_last_step=None,
                created_at=now,
            )
        )
        token = offer_keyfile(s, username, keyfile.render(account, username))
        audit.append(s, account, username, "account_registered")
    response = make_response(
        render_template(
            "account/registered.html",
            account=account,
            username=username,
            password=password,
        )
    )
    response.headers["Cache-Control"] = "no-store"
    set_keyfile_cookie(response, token)
    return response


def offer_keyfile(s: DbSession, username: str, content: bytes) -> str:
    """Keep a new key file for one download by this browser; return the cookie's token. The
    database row alone cannot be opened: its key is derived from the token."""
    token = secrets.token_urlsafe(32)
    s.add(
        PendingKeyfile(
            token_hash=token_hash(token),
            username=username,
            sealed=_seal_for_browser(token, content),
            expires_at=int(time.time()) + PENDING_SECONDS,
        )
    )
    return token


def set_keyfile_cookie(response: Response, token: str) -> None:
    response.set_cookie(
        REG_COOKIE,
        token,
        secure=True,
        httponly=True,
        samesite="Strict",
        path="/",
        max_age=PENDING_SECONDS,
    )


@bp.post("/register/keyfile")
@access("public")
def register_keyfile() -> Response | tuple[str, int]:
    form = EmptyForm()
    token = request.cookies.get(REG_COOKIE, "")
    if not form.validate_on_submit() or not token or len(token) > 100:
        return render_template(
            "error.html",
            title="No key file to download",
            message="The key file can be downloaded once, right after "
            "registration, from the same browser.",
        ), 410
    with web().db.session() as s:
        row = s.get(PendingKeyfile, token_hash(token))
        # One download only: the row goes away in the same transaction.
        if row is not None:
            s.delete(row)
        s.execute(delete(PendingKeyfile).where(PendingKeyfile.expires_at < int(time.time())))
    content = None
    if row is not None and row.expires_at >= int(time.time()):
        content = _open_for_browser(token, row.sealed)
    if content is None:
        return render_template(
            "error.html",
            title="No key file to download",
            message="The key file was already downloaded or has expired. It cannot be shown again.",
        ), 410
    response = make_response(content)
    response.headers["Content-Type"] = "application/octet-stream"
    name = row.username if row is not None else "account"
    response.headers["Content-Disposition"] = f'attachment; filename="ddmail-{name}.key"'
    response.headers["Cache-Control"] = "no-store"
    response.delete_cookie(REG_COOKIE, secure=True, httponly=True, samesite="Strict", path="/")
    return response


def check_login(username: str, password: str, keyfile: KeyFile | None) -> User | None:
    """The user if all factors are right. The same argon2 work is done for an unknown user, and
    failures are counted only when the key file was right: someone without the key file cannot
    lock the owner out by guessing passwords."""
    state = web()
    with state.db.session() as s:
        user = s.execute(select(User).where(User.username == username)).scalar()
    password_ok = state.passwords.verify(user.password_hash if user else None, password)
    keyfile_ok = user is not None and keyfile is not None and keyfile.matches(user.keyfile_digest)
    if user is None or not keyfile_ok:
        return None
    key = "login:" + hashlib.sha256(username.encode()).hexdigest()[:32]
    with state.db.session() as s:
        if count(s, key, LOGIN_WINDOW) >= state.settings.login_failures_per_user:
            return None
        if not password_ok:
            hit(s, key, LOGIN_WINDOW)
            audit.append(s, user.account, username, "login_failed")
            return None
    return user


@bp.route("/login", methods=["GET", "POST"])
@access("public")
def login() -> Response | str | tuple[str, int]:
    form = LoginForm()
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("account/login.html", form=form), status
    state = web()
    with state.db.session() as s:
        flood = count(s, GLOBAL_FAILURES, 60) >= state.settings.login_failures_global
    if flood:
        # No argon2 work while failures pour in: the CPU stays available to everyone else.
        return render_template("account/busy_login.html", form=form), 429
    keyfile = KeyFile.parse(form.key.data.read(4097))
    user = check_login(form.user.data, form.password.data, keyfile)
    if user is not None and not totp_views.check_code(user, form.totp.data or ""):
        with web().db.session() as s:
            audit.append(s, user.account, user.username, "login_failed", "one-time code")
        user = None
    if user is None:
        with state.db.session() as s:
            hit(s, GLOBAL_FAILURES, 60)
        flash(LOGIN_FAILED, "error")
        return render_template("account/login.html", form=form), 401
    if g.get("session_id") is not None:
        with web().db.session() as s:
            s.execute(delete(Session).where(Session.id == g.session_id))
    start_session(user.id)
    with web().db.session() as s:
        audit.append(s, user.account, user.username, "login")
    return redirect(url_for("settings.menu"))


@bp.post("/logout")
@access("authenticated", disabled_ok=True)
def logout() -> Response:
    form = EmptyForm()
    if form.validate_on_submit():
        with web().db.session() as s:
            s.execute(delete(Session).where(Session.id == g.session_id))
            audit.append(s, g.user.account, g.user.username, "logout")
        g.clear_session_cookie = True
        flash("You are logged out.", "success")
    return redirect(url_for("account.login"))


@bp.get("/settings/sessions")
@access("authenticated", disabled_ok=True)
def sessions() -> str:
    with web().db.session() as s:
        rows = (
            s.execute(
                select(Session)
                .where(Session.user_id == g.user.id, live(web().settings, int(time.time())))
                .order_by(Session.id.desc())
            )
            .scalars()
            .all()
        )
    return render_template("account/sessions.html", rows=rows, current=g.session_id)


@bp.post("/settings/sessions/revoke")
@access("authenticated", disabled_ok=True)
def revoke_session() -> Response | tuple[str, int]:
    form = RevokeForm()
    if not form.validate_on_submit():
        flash("Choose a session to end.", "error")
        return redirect(url_for("account.sessions"))
    with web().db.session() as s:
        row = s.get(Session, int(form.session.data))
        if row is None or row.user_id != g.user.id:
            flash("No such session.", "error")
            return redirect(url_for("account.sessions"))
        s.delete(row)
        audit.append(s, g.user.account, g.user.username, "session_revoked", str(row.id))
    if row.id == g.session_id:
        g.clear_session_cookie = True
        return redirect(url_for("account.login"))
    flash("The session has ended.", "success")
    return redirect(url_for("account.sessions"))

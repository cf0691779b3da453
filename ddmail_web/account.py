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
    session,
    url_for,
)
from sqlalchemy import delete, select
from sqlalchemy.orm import Session as DbSession
from werkzeug.wrappers import Response

from ddmail_common.errors import ApiError
from ddmail_web import admission, audit, funds, lockout, totp_views, transport
from ddmail_web.account_data import delete_everything
from ddmail_web.credentials import (
    KeyFile,
    new_account_id,
    new_password,
    new_payment_reference,
    new_recovery_secret,
    new_username,
)
from ddmail_web.forms import EmptyForm, LoginForm, RegisterForm, RevokeForm
from ddmail_web.models import Account, PendingKeyfile, Session, User
from ddmail_web.sessions import access, live, start_session, token_hash
from ddmail_web.state import web

bp = Blueprint("account", __name__)
REG_COOKIE = "ddmail_registration"  # __Host- over TLS (ddmail_web.transport)
PENDING_SECONDS = 1800
# Where older versions kept a TOTP secret being set up (Flask's signed cookie); now it is on the
# session's row, and a browser still carrying one loses it at its next login or logout.
LEGACY_TOTP_PENDING = "totp_pending"
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


def _register_page(form: RegisterForm, error: str = "", status: int = 200) -> tuple[str, int]:
    if error:
        flash(error, "error")
    return render_template("account/register.html", form=form, settings=web().settings), status


@bp.route("/register", methods=["GET", "POST"])
@access("public")
def register() -> Response | str | tuple[str, int]:
    form = RegisterForm()
    state = web()
    if not form.validate_on_submit():
        return _register_page(form)
    voucher = (form.voucher.data or "").strip() or None
    try:
        with state.db.session() as s:  # a cheap early answer, before any work
            full = voucher is None and admission.room_is_full(s, state.settings)
        if full:
            admission.make_room(
                state.db,
                lambda old: delete_everything(state.db, state.backend, old, "system", False),
            )
        with state.db.session() as s:
            admission.check(s, state.settings, voucher)
    except admission.Refused as exc:
        return _register_page(form, str(exc), exc.status)
    except ApiError as exc:
        return _register_page(form, f"Registration is not possible right now: {exc.message}", 503)
    account, username, password = new_account_id(), new_username(), new_password()
    keyfile, recovery = KeyFile.generate(), new_recovery_secret()
    # Before anything is created: with the server busy, the request is shed here (Busy).
    password_hash = state.passwords.hash(password, proven=False)
    enabled = state.settings.new_accounts_enabled or voucher is not None
    try:
        # The backend first: if it is down nothing is created here either.
        state.backend.call(
            "POST", "/v1/accounts/recovery-key", {"account": account, "secret": recovery}
        )
        if not enabled:
            # Unfunded: its future mailboxes receive but cannot log in or send until funds arrive.
            state.backend.call("POST", "/v1/accounts/state", {"account": account, "enabled": False})
    except ApiError as exc:
        return _register_page(form, f"Registration is not possible right now: {exc.message}", 503)
    now = int(time.time())
    try:
        with state.db.session() as s:
            # The exact check, in turn with concurrent registrations (the early one may race).
            admission.serialize(s)
            admission.check(s, state.settings, voucher)
            s.add(
                Account(
                    id=account,
                    created_at=now,
                    enabled=enabled,
                    gratis=False,
                    payment_reference=new_payment_reference(),
                )
            )
            s.flush()
            s.add(
                User(
                    account=account,
                    username=username,
                    password_hash=password_hash,
                    keyfile_digest=keyfile.digest(),
                    recovery_sealed=keyfile.seal(username, recovery),
                    totp_sealed=None,
                    totp_last_step=None,
                    created_at=now,
                )
            )
            token = offer_keyfile(s, username, keyfile.render(account, username))
            audit.append(s, account, username, "account_registered")
            if voucher is not None:
                funds.redeem(s, account, username, voucher)
    except (admission.Refused, funds.FundsError) as exc:
        # Lost a race; the backend's recovery key for this account id stays, unused.
        return _register_page(form, str(exc), getattr(exc, "status", 400))
    response = make_response(
        render_template(
            "account/registered.html",
            account=account,
            username=username,
            password=password,
            funded=voucher is not None,
            claim_hours=state.settings.purge_unclaimed_hours,
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
    transport.set_cookie(response, REG_COOKIE, token, max_age=PENDING_SECONDS)


@bp.post("/register/keyfile")
@access("public")
def register_keyfile() -> Response | tuple[str, int]:
    form = EmptyForm()
    token = transport.read_cookie(REG_COOKIE) or ""
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
    transport.delete_cookie(response, REG_COOKIE)
    return response


# Unknown usernames are compared with this, so they take the same (tiny) time as a known user
# with a wrong key file.
DECOY_DIGEST = KeyFile.generate().digest()


def check_login(username: str, password: str, keyfile: KeyFile | None, code: str) -> User | None:
    """The user if every factor is right.

    The key file comes first: 512 random bits checked with one SHA-256. Without it no argon2
    runs and nothing is counted, so made-up usernames and junk key files cost the server almost
    nothing and can never stop the owner. With it, each user has a budget of argon2 checks and
    of failures (password or one-time code) per window; only the key file's holder can use them
    up."""
    state = web()
    with state.db.session() as s:
        user = s.execute(select(User).where(User.username == username)).scalar()
    digest = user.keyfile_digest if user is not None else DECOY_DIGEST
    if keyfile is None or not keyfile.matches(digest) or user is None:
        return None
    with state.db.session() as s:
        if lockout.locked(s, state.settings, username):
            return None
        if not lockout.spend_argon2(s, state.settings, username):
            return None
    if not state.passwords.verify(user.password_hash, password):
        detail: tuple[str, ...] = ()
    elif not totp_views.check_code(user, code):
        detail = ("one-time code",)
    else:
        return user
    with state.db.session() as s:
        lockout.failed(s, username)
        audit.append(s, user.account, username, "login_failed", *detail)
    return None


@bp.route("/login", methods=["GET", "POST"])
@access("public")
def login() -> Response | str | tuple[str, int]:
    form = LoginForm()
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("account/login.html", form=form), status
    keyfile = KeyFile.parse(form.key.data.read(4097))
    user = check_login(form.user.data, form.password.data, keyfile, form.totp.data or "")
    if user is None:
        flash(LOGIN_FAILED, "error")
        return render_template("account/login.html", form=form), 401
    if g.get("session_id") is not None:
        # The old session's row goes, and with it anything pending on it (a TOTP secret).
        with web().db.session() as s:
            s.execute(delete(Session).where(Session.id == g.session_id))
    start_session(user.id)
    session.pop(LEGACY_TOTP_PENDING, None)
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
        session.pop(LEGACY_TOTP_PENDING, None)
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

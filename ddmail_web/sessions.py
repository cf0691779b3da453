"""Server-side sessions behind a cookie (`__Host-` over TLS: ddmail_web.transport), and the
access rule every route declares."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, Literal, TypeVar

from flask import Response, current_app, g, redirect, url_for
from sqlalchemy import ColumnElement, and_, bindparam, delete, select, update
from sqlalchemy.orm import Session as DbSession

from ddmail_common.config import WebSettings
from ddmail_web import transport
from ddmail_web.models import Account, Session, User
from ddmail_web.reauth import refused_without_keyfile

COOKIE = "ddmail_session"  # __Host- over TLS (ddmail_web.transport)
TOUCH_EVERY = 60  # seconds between last_seen writes: a write per page view is not needed
Access = Literal["public", "authenticated", "reauthenticated"]
F = TypeVar("F", bound=Callable[..., Any])


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def access(rule: Access, disabled_ok: bool = False) -> Callable[[F], F]:
    """Declare who may use a route. `reauthenticated` routes are logged-in routes whose POSTs
    are refused here unless they carry the user's key file again (ddmail_web.reauth): every
    action that cannot be undone is declared so. Users of a disabled account reach only routes
    marked DISABLED_OK (funds, leaving: export, deletion, sessions, logout). The route audit
    test fails for a route without a declared rule."""

    def decorate(view: F) -> F:
        if rule == "public":
            view._ddmail_access = rule  # type: ignore[attr-defined]
            return view

        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if g.get("user") is None:
                return redirect(url_for("account.login"))
            if not disabled_ok and not g.account.enabled:
                return redirect(url_for("funds.page"))
            if rule == "reauthenticated":
                refused = refused_without_keyfile()
                if refused is not None:
                    return refused
            return view(*args, **kwargs)

        wrapper._ddmail_access = rule  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


@dataclass(frozen=True)
class SessionUser:
    """The logged-in user, as a page view needs it (plain values, no ORM object)."""

    id: int
    account: str
    username: str


@dataclass(frozen=True)
class SessionAccount:
    id: str
    created_at: int
    enabled: bool
    gratis: bool
    payment_reference: str


def cutoffs(settings: WebSettings, now: int) -> dict[str, int]:
    """The one timeout rule: a session is live if seen since `seen_after` and made since
    `made_after`."""
    return {
        "seen_after": now - settings.session_idle_minutes * 60,
        "made_after": now - settings.session_absolute_hours * 3600,
    }


def _live_clause(seen_after: Any, made_after: Any) -> ColumnElement[bool]:
    return and_(Session.last_seen >= seen_after, Session.created_at >= made_after)


def live(settings: WebSettings, now: int) -> ColumnElement[bool]:
    """Sessions that have neither idled out nor reached their absolute age."""
    return _live_clause(**cutoffs(settings, now))


# The same, with the cutoffs as parameters (cutoffs()), for statements built once.
LIVE = _live_clause(bindparam("seen_after"), bindparam("made_after"))


# One Core query per page view of a logged-in user, built once (its cutoffs are parameters): an
# ORM load of three objects cost more than everything else the settings menu does
# (docs/performance-panel.md).
_LOOKUP = (
    select(
        Session.id,
        Session.last_seen,
        LIVE,
        User.id,
        User.username,
        Account.id,
        Account.created_at,
        Account.enabled,
        Account.gratis,
        Account.payment_reference,
    )
    .join(User, User.id == Session.user_id)
    .join(Account, Account.id == User.account)
    .where(Session.token_hash == bindparam("token_hash"))
)


def load_session() -> None:
    """before_request: find the logged-in user, ending sessions that timed out."""
    g.user = None
    g.account = None
    token = transport.read_cookie(COOKIE)
    if not token or len(token) > 100:
        return
    web = current_app.extensions["ddmail_web"]
    now = int(time.time())
    with web.db.engine.connect() as conn:
        params = {"token_hash": token_hash(token), **cutoffs(web.settings, now)}
        found = conn.execute(_LOOKUP, params).first()
        if found is None:
            return
        (sid, last_seen, is_live, uid, username, aid, a_created, enabled, gratis, ref) = found
        if not is_live:
            conn.execute(delete(Session).where(Session.id == sid))
            conn.commit()
            return
        if now - last_seen > TOUCH_EVERY:
            conn.execute(update(Session).where(Session.id == sid).values(last_seen=now))
            conn.commit()
    g.session_id = sid
    g.user = SessionUser(uid, aid, username)
    g.account = SessionAccount(aid, a_created, bool(enabled), bool(gratis), ref)


def purge_expired(s: DbSession, settings: WebSettings, now: int) -> int:
    """Remove sessions that can no longer log anybody in (periodic job): a session abandoned
    without logging out would otherwise stay, with its times, until its user came back."""
    result = s.execute(delete(Session).where(~live(settings, now)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def start_session(user_id: int) -> str:
    """A fresh token for a new login (never reuse one from before the login)."""
    web = current_app.extensions["ddmail_web"]
    token = secrets.token_urlsafe(32)
    now = int(time.time())
    with web.db.session() as s:
        s.add(Session(token_hash=token_hash(token), user_id=user_id, created_at=now, last_seen=now))
    g.new_session_token = token
    return token


def end_sessions(user_id: int, keep: int | None = None) -> None:
    web = current_app.extensions["ddmail_web"]
    with web.db.session() as s:
        query = delete(Session).where(Session.user_id == user_id)
        if keep is not None:
            query = query.where(Session.id != keep)
        s.execute(query)


def set_cookie(response: Response) -> Response:
    """after_request: write or clear the session cookie."""
    token = g.get("new_session_token")
    if token is not None:
        transport.set_cookie(response, COOKIE, token)
    elif g.get("clear_session_cookie"):
        transport.delete_cookie(response, COOKIE)
    return response

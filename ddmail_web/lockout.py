"""Per-user login limits, counted only once the right key file was shown: failures (a wrong
password or one-time code) lock the user's logins for a while, and argon2 checks have a budget
per window whatever their outcome, so no single account can keep the server's CPU busy."""

from __future__ import annotations

import hashlib

from sqlalchemy.orm import Session as DbSession

from ddmail_common.config import WebSettings
from ddmail_web.throttle import count, hit

WINDOW = 900


def _key(what: str, username: str) -> str:
    return f"{what}:" + hashlib.sha256(username.encode()).hexdigest()[:32]


def locked(s: DbSession, settings: WebSettings, username: str) -> bool:
    return count(s, _key("login", username), WINDOW) >= settings.login_failures_per_user


def failed(s: DbSession, username: str) -> None:
    hit(s, _key("login", username), WINDOW)


def spend_argon2(s: DbSession, settings: WebSettings, username: str) -> bool:
    """Take one argon2 check from USERNAME's budget; False if it is used up."""
    return hit(s, _key("argon2", username), WINDOW) <= settings.logins_per_user

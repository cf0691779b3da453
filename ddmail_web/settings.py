"""The settings overview (every area with a one-line status) and the account's audit trail."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, g, render_template
from sqlalchemy import func, select

from ddmail_common.errors import ApiError
from ddmail_web import audit, funds
from ddmail_web.models import Session, User
from ddmail_web.sessions import access, live
from ddmail_web.state import web

bp = Blueprint("settings", __name__, url_prefix="/settings")

UNAVAILABLE = "Status unavailable right now"
# The backend's domain states, in the words of the domains page.
DOMAIN_STATES = {
    "active": "verified",
    "pending": "waiting for DNS",
    "suspended": "suspended",
    "superseded": "claimed by another account",
}


def counted(n: int, one: str, many: str = "") -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def mail_status(counts: dict[str, Any] | None) -> dict[str, str]:
    """The lines of what the backend keeps (None: it did not answer)."""
    if counts is None:
        return dict.fromkeys(("mailboxes", "aliases", "domains", "openpgp"), UNAVAILABLE)
    boxes, aliases, domains = counts["mailboxes"], counts["aliases"], counts["domains"]
    removing = boxes.get("deleting", 0)
    states = [
        f"{domains[state]} {words}" for state, words in DOMAIN_STATES.items() if domains.get(state)
    ]
    lines = {
        "mailboxes": counted(sum(boxes.values()), "mailbox", "mailboxes")
        + (f" ({removing} being removed)" if removing else ""),
        "aliases": counted(aliases, "alias", "aliases"),
        "domains": counted(sum(domains.values()), "domain")
        + (": " + ", ".join(states) if states else ""),
    }
    keys = counts["openpgp"]
    if keys is None:
        lines["openpgp"] = UNAVAILABLE
    else:
        lines["openpgp"] = counted(keys["keys"], "key") + (
            f", used by {counted(keys['mailboxes'], 'mailbox', 'mailboxes')}"
            if keys["keys"]
            else ""
        )
        if keys["held_back"]:
            lines["openpgp"] += (
                f"; mail for {counted(keys['held_back'], 'mailbox', 'mailboxes')} is held back"
            )
    return lines


def panel_status() -> dict[str, str]:
    """The lines of what the panel keeps itself: funds, users, sessions, one-time codes."""
    state = web()
    with state.db.session() as s:
        balance = funds.balance(s, g.account.id)
        users = s.execute(
            select(func.count()).select_from(User).where(User.account == g.account.id)
        ).scalar_one()
        sessions = s.execute(
            select(func.count())
            .select_from(Session)
            .where(Session.user_id == g.user.id, live(state.settings, int(time.time())))
        ).scalar_one()
        totp = s.execute(select(User.totp_sealed.is_not(None)).where(User.id == g.user.id))
        totp_on = bool(totp.scalar_one())
    return {
        "funds": f"Balance: {funds.money_text(balance, state.settings)}"
        + (" (this account is free of charge)" if g.account.gratis else ""),
        "users": counted(users, "user") + (" (you)" if users == 1 else ", you included"),
        "sessions": counted(sessions, "session")
        + (" (this one)" if sessions == 1 else ", this one included"),
        "totp": "On: every login needs a code" if totp_on else "Off: logins need no code",
    }


@bp.get("")
@access("authenticated")
def menu() -> str:
    try:
        counts = web().backend.call("GET", f"/v1/overview?account={g.account.id}")
    except ApiError:
        counts = None  # the links and forms still work; the lines say what is not known
    return render_template(
        "settings/menu.html", status=mail_status(counts) | panel_status(), unavailable=UNAVAILABLE
    )


@bp.get("/audit")
@access("authenticated")
def audit_trail() -> str:
    with web().db.session() as s:
        rows = audit.entries(s, g.account.id)
    return render_template("settings/audit.html", rows=rows)

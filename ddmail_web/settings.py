"""The settings overview (every area with a one-line status) and the account's audit trail."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, g, render_template
from sqlalchemy import bindparam, func, select

from ddmail_common.errors import ApiError
from ddmail_web import audit, funds
from ddmail_web.models import Session, User
from ddmail_web.sessions import LIVE, access, cutoffs
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


# What the panel keeps itself, in one Core statement built once: four ORM queries cost the
# settings page more than all else it does (docs/performance-panel.md).
_PANEL_COUNTS = select(
    funds.BALANCE.scalar_subquery(),
    select(func.count())
    .select_from(User)
    .where(User.account == bindparam("account"))
    .scalar_subquery(),
    select(func.count())
    .select_from(Session)
    .where(Session.user_id == bindparam("user_id"), LIVE)
    .scalar_subquery(),
    select(User.totp_sealed.is_not(None)).where(User.id == bindparam("user_id")).scalar_subquery(),
)


def panel_status() -> dict[str, str]:
    """The lines of what the panel keeps itself: funds, users, sessions, one-time codes."""
    state = web()
    params = {
        "account": g.account.id,
        "user_id": g.user.id,
        **cutoffs(state.settings, int(time.time())),
    }
    with state.db.engine.connect() as conn:
        balance, users, sessions, totp_on = conn.execute(_PANEL_COUNTS, params).one()
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

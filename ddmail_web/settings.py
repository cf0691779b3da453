"""The settings menu and the account's audit trail."""

from __future__ import annotations

from flask import Blueprint, g, render_template

from ddmail_web import audit
from ddmail_web.sessions import access
from ddmail_web.state import web

bp = Blueprint("settings", __name__, url_prefix="/settings")


@bp.get("")
@access("authenticated")
def menu() -> str:
    return render_template("settings/menu.html")


@bp.get("/audit")
@access("authenticated")
def audit_trail() -> str:
    with web().db.session() as s:
        rows = audit.entries(s, g.account.id)
    return render_template("settings/audit.html", rows=rows)

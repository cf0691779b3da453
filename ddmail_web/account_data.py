"""Deleting an account (everything, mailboxes crypto-shredded first) and exporting its data."""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, flash, g, make_response, render_template
from sqlalchemy import delete, select
from werkzeug.wrappers import Response

from ddmail_common.errors import ApiError
from ddmail_web import audit
from ddmail_web.forms import ConfirmDeleteForm
from ddmail_web.models import Account, Session, User
from ddmail_web.reauth import presented_keyfile
from ddmail_web.sessions import access
from ddmail_web.state import web

bp = Blueprint("account_data", __name__, url_prefix="/settings/account")


def _list(path: str, key: str) -> list[dict[str, Any]]:
    return list(web().backend.call("GET", f"{path}?account={g.account.id}").get(key, []))


def remove_mail_data(account: str) -> None:
    """Aliases, then mailboxes (each crypto-shredded by the backend), then domains. Raises
    ApiError on the first failure; a retry continues where it stopped."""
    client = web().backend
    for alias in _list("/v1/aliases", "aliases"):
        client.call("POST", "/v1/aliases/remove", {"account": account, "address": alias["address"]})
    for mailbox in _list("/v1/mailboxes", "mailboxes"):
        if mailbox["state"] == "active":
            client.call(
                "POST", "/v1/mailboxes/remove", {"account": account, "address": mailbox["address"]}
            )
    for domain in _list("/v1/domains", "domains"):
        client.call("POST", "/v1/domains/remove", {"account": account, "name": domain["name"]})


@bp.route("/delete", methods=["GET", "POST"])
@access("reauthenticated")
def delete_account() -> Response | str | tuple[str, int]:
    form = ConfirmDeleteForm()
    if not form.validate_on_submit():
        return render_template("account/delete.html", form=form), 400 if form.errors else 200
    if presented_keyfile(form.key.data) is None:
        flash("That is not your key file; nothing was deleted.", "error")
        return render_template("account/delete.html", form=form), 400
    account = g.account.id
    try:
        remove_mail_data(account)
    except ApiError as exc:
        flash(
            f"The account could not be deleted completely: {exc.message} Try again; "
            "what is already removed stays removed.",
            "error",
        )
        return render_template("account/delete.html", form=form), 503
    with web().db.session() as s:
        user_ids = select(User.id).where(User.account == account)
        s.execute(delete(Session).where(Session.user_id.in_(user_ids)))
        s.execute(delete(User).where(User.account == account))
        s.execute(delete(Account).where(Account.id == account))
        # The trail keeps one final entry: that the account was deleted, and by whom.
        audit.append(s, account, g.user.username, "account_deleted")
    g.clear_session_cookie = True
    return render_template("account/deleted.html")


@bp.get("/export")
@access("authenticated")
def export() -> Response:
    with web().db.session() as s:
        users = s.execute(
            select(User.username, User.created_at).where(User.account == g.account.id)
        ).all()
        trail = audit.entries(s, g.account.id, limit=100_000)
    data = {
        "exported_at": int(time.time()),
        "account": {
            "id": g.account.id,
            "created_at": g.account.created_at,
            "enabled": g.account.enabled,
            "payment_reference": g.account.payment_reference,
        },
        "users": [{"username": u, "created_at": c} for u, c in users],
        "mailboxes": _list("/v1/mailboxes", "mailboxes"),
        "aliases": _list("/v1/aliases", "aliases"),
        "domains": _list("/v1/domains", "domains"),
        "audit": [
            {
                "seq": e.seq,
                "time": e.created_at,
                "actor": e.actor,
                "action": e.action,
                "object": e.object,
                "hash": e.hash,
            }
            for e in reversed(trail)
        ],
    }
    response = make_response(json.dumps(data, indent=2))
    response.headers["Content-Type"] = "application/json"
    response.headers["Content-Disposition"] = (
        f'attachment; filename="ddmail-account-{g.account.id}.json"'
    )
    return response

"""Deleting an account (everything, mailboxes crypto-shredded first) and exporting its data."""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, flash, g, make_response, render_template
from sqlalchemy import delete, select
from werkzeug.wrappers import Response

from ddmail_common.client import ServiceClient
from ddmail_common.db import Database
from ddmail_common.errors import ApiError
from ddmail_web import audit, funds
from ddmail_web.forms import ConfirmDeleteForm
from ddmail_web.funds_models import LedgerEntry
from ddmail_web.models import Account, Session, User
from ddmail_web.sessions import access
from ddmail_web.state import web

bp = Blueprint("account_data", __name__, url_prefix="/settings/account")


def _list(client: ServiceClient, path: str, key: str, account: str) -> list[dict[str, Any]]:
    return list(client.call("GET", f"{path}?account={account}").get(key, []))


def delete_everything(
    db: Database, client: ServiceClient, account: str, actor: str, leave_trace: bool = True
) -> None:
    """Aliases, then mailboxes (each crypto-shredded by the backend), then domains, then what
    the backend and keyhandler keep per account (recovery key, OpenPGP keys, state), then the
    panel's rows; the audit trail is closed down to one final entry (or, without LEAVE_TRACE,
    for an account nobody ever used, removed). Raises ApiError on the first failure; a retry
    continues where it stopped."""
    for alias in _list(client, "/v1/aliases", "aliases", account):
        client.call("POST", "/v1/aliases/remove", {"account": account, "address": alias["address"]})
    for mailbox in _list(client, "/v1/mailboxes", "mailboxes", account):
        if mailbox["state"] == "active":
            client.call(
                "POST", "/v1/mailboxes/remove", {"account": account, "address": mailbox["address"]}
            )
    for domain in _list(client, "/v1/domains", "domains", account):
        client.call("POST", "/v1/domains/remove", {"account": account, "name": domain["name"]})
    client.call("POST", "/v1/accounts/remove", {"account": account})
    with db.session() as s:
        user_ids = select(User.id).where(User.account == account)
        s.execute(delete(Session).where(Session.user_id.in_(user_ids)))
        s.execute(delete(User).where(User.account == account))
        s.execute(delete(Account).where(Account.id == account))
        if leave_trace:
            # The trail keeps one final entry only: that the account was deleted, and by whom.
            audit.close(s, account, actor, "account_deleted")
        else:
            audit.forget(s, account)


@bp.route("/delete", methods=["GET", "POST"])
@access("reauthenticated", disabled_ok=True)
def delete_account() -> Response | str | tuple[str, int]:
    form = ConfirmDeleteForm()
    if not form.validate_on_submit():
        return render_template("account/delete.html", form=form), 400 if form.errors else 200
    state = web()
    try:
        delete_everything(state.db, state.backend, g.account.id, g.user.username)
    except ApiError as exc:
        flash(
            f"The account could not be deleted completely: {exc.message} Try again; "
            "what is already removed stays removed.",
            "error",
        )
        return render_template("account/delete.html", form=form), 503
    g.clear_session_cookie = True
    return render_template("account/deleted.html")


@bp.get("/export")
@access("authenticated", disabled_ok=True)
def export() -> Response:
    client = web().backend
    with web().db.session() as s:
        users = s.execute(
            select(User.username, User.created_at).where(User.account == g.account.id)
        ).all()
        trail = audit.entries(s, g.account.id, limit=100_000)
        ledger = (
            s.execute(
                select(LedgerEntry)
                .where(LedgerEntry.account == g.account.id)
                .order_by(LedgerEntry.id)
            )
            .scalars()
            .all()
        )
        balance = funds.balance(s, g.account.id)
    data = {
        "exported_at": int(time.time()),
        "account": {
            "id": g.account.id,
            "created_at": g.account.created_at,
            "enabled": g.account.enabled,
            "payment_reference": g.account.payment_reference,
        },
        "users": [{"username": u, "created_at": c} for u, c in users],
        "mailboxes": _list(client, "/v1/mailboxes", "mailboxes", g.account.id),
        "aliases": _list(client, "/v1/aliases", "aliases", g.account.id),
        "domains": _list(client, "/v1/domains", "domains", g.account.id),
        "openpgp_keys": _list(client, "/v1/openpgp/keys", "keys", g.account.id),
        "funds": {
            "balance_cents": balance,
            "ledger": [
                {
                    "time": e.created_at,
                    "kind": e.kind,
                    "amount_cents": e.amount_cents,
                    "note": e.note,
                }
                for e in ledger
            ],
        },
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

"""The funds page: balance, payment reference, storage used, vouchers."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from ddmail_common.errors import ApiError
from ddmail_web import funds
from ddmail_web.forms import VoucherForm
from ddmail_web.funds_models import LedgerEntry
from ddmail_web.sessions import access
from ddmail_web.state import web

bp = Blueprint("funds", __name__, url_prefix="/settings")


@bp.get("/funds")
@access("authenticated", disabled_ok=True)
def page() -> str:
    state = web()
    with state.db.session() as s:
        balance = funds.balance(s, g.account.id)
        ledger = (
            s.execute(
                select(LedgerEntry)
                .where(LedgerEntry.account == g.account.id)
                .order_by(LedgerEntry.id.desc())
                .limit(100)
            )
            .scalars()
            .all()
        )
    try:
        used = int(state.backend.call("GET", f"/v1/usage?account={g.account.id}")["bytes"])
    except ApiError:
        used = None
    return render_template(
        "account/funds.html",
        balance=funds.money_text(balance, state.settings),
        ledger=ledger,
        used=used,
        form=VoucherForm(),
        price=funds.price_text(state.settings),
        money=lambda cents: funds.money_text(cents, state.settings),
    )


@bp.post("/funds/voucher")
@access("authenticated", disabled_ok=True)
def voucher() -> Response:
    form = VoucherForm()
    if not form.validate_on_submit():
        flash("Enter a voucher code.", "error")
        return redirect(url_for("funds.page"))
    state = web()
    try:
        with state.db.session() as s:
            cents = funds.redeem(s, g.account.id, g.user.username, form.code.data)
            revive = not g.account.enabled and funds.balance(s, g.account.id) > 0
    except funds.FundsError as exc:
        flash(str(exc), "error")
        return redirect(url_for("funds.page"))
    flash(f"{funds.money_text(cents, state.settings)} added to your funds.", "success")
    if revive:
        try:
            funds.Billing(state.db, state.backend, state.settings).set_enabled(
                g.account.id, True, g.user.username
            )
        except ApiError as exc:
            flash(f"Your account could not be enabled yet: {exc.message}", "error")
    return redirect(url_for("funds.page"))

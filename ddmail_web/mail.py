"""Mailboxes, aliases and own domains, managed through the backend (never directly)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, make_response, redirect, render_template, url_for
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import SelectField

from ddmail_common.errors import ApiError
from ddmail_web import audit
from ddmail_web.forms import (
    AddAliasForm,
    AddMailboxForm,
    DomainForm,
    DomainRemoveForm,
    MailboxPasswordForm,
    MailboxRemoveForm,
    MailboxResetForm,
    RemoveAliasForm,
)
from ddmail_web.public import mail_client_values
from ddmail_web.reauth import recovery_secret, verified
from ddmail_web.sessions import access
from ddmail_web.state import web

bp = Blueprint("mail", __name__, url_prefix="/settings")


def backend(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Call the backend; on failure flash its plain-sentence message and return None."""
    try:
        return web().backend.call(method, path, body)
    except ApiError as exc:
        flash(exc.message, "error")
        return None


def record(action: str, obj: str = "") -> None:
    with web().db.session() as s:
        audit.append(s, g.user.account, g.user.username, action, obj)


def _domains() -> list[str]:
    answer = backend("GET", f"/v1/domains?account={g.account.id}") or {}
    own = [d["name"] for d in answer.get("domains", []) if d["verified"] and d["enabled"]]
    return list(answer.get("global", [])) + own


def _offer_domains(form: FlaskForm, field: SelectField) -> None:
    """The domain select's options. A required select must start with an empty placeholder (HTML:
    its first option is the one nothing is chosen by); a fresh form still preselects the first
    domain, so the common case (only the global domain) needs no extra choice."""
    domains = _domains()
    field.choices = [("", "Choose a domain")] + [(d, d) for d in domains]
    if domains and not form.is_submitted():
        field.data = domains[0]


def _mailboxes() -> list[dict[str, Any]]:
    answer = backend("GET", f"/v1/mailboxes?account={g.account.id}") or {}
    return list(answer.get("mailboxes", []))


def _storage() -> dict[str, int]:
    """Bytes each mailbox uses, by address; none when the backend cannot say (the mailbox list
    has flashed that already)."""
    try:
        answer = web().backend.call("GET", f"/v1/usage?account={g.account.id}")
    except ApiError:
        return {}
    return dict(answer["mailboxes"])


def show_secret(title: str, address: str, password: str) -> Response:
    response = make_response(
        render_template(
            "mail/password.html",
            title=title,
            address=address,
            password=password,
            **mail_client_values(),
        )
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/mailboxes", methods=["GET", "POST"])
@access("authenticated")
def mailboxes() -> Response | str | tuple[str, int]:
    form = AddMailboxForm()
    _offer_domains(form, form.domain)
    if form.validate_on_submit():
        address = f"{form.local_part.data}@{form.domain.data}"
        made = backend("POST", "/v1/mailboxes", {"account": g.account.id, "address": address})
        if made is not None:
            record("mailbox_added", made["address"])
            return show_secret("Mailbox created", made["address"], made["password"])
    status = 400 if form.errors else 200
    return render_template(
        "mail/mailboxes.html",
        form=form,
        mailboxes=_mailboxes(),
        storage=_storage(),
        **mail_client_values(),
    ), status


@bp.post("/mailboxes/password")
@access("authenticated")
def mailbox_password() -> Response:
    form = MailboxPasswordForm()
    if form.validate_on_submit():
        answer = backend(
            "POST",
            "/v1/mailboxes/password",
            {
                "account": g.account.id,
                "address": form.mailbox.data,
                "current_password": form.current_password.data,
            },
        )
        if answer is not None:
            # The backend's canonical address, never the raw form value (audit, display).
            record("mailbox_password_changed", answer["address"])
            return show_secret("New mailbox password", answer["address"], answer["password"])
    else:
        flash("Enter the mailbox's current password.", "error")
    return redirect(url_for("mail.mailboxes"))


@bp.post("/mailboxes/reset")
@access("reauthenticated")
def mailbox_reset() -> Response:
    form = MailboxResetForm()
    secret = recovery_secret(*verified()) if form.validate_on_submit() else None
    if secret is None:
        flash("That is not your key file.", "error")
        return redirect(url_for("mail.mailboxes"))
    answer = backend(
        "POST",
        "/v1/mailboxes/reset",
        {"account": g.account.id, "address": form.mailbox.data, "recovery_secret": secret},
    )
    if answer is None:
        return redirect(url_for("mail.mailboxes"))
    record("mailbox_password_reset", answer["address"])
    return show_secret("New mailbox password", answer["address"], answer["password"])


@bp.post("/mailboxes/remove")
@access("reauthenticated")
def mailbox_remove() -> Response:
    form = MailboxRemoveForm()
    if not form.validate_on_submit():
        flash("Tick the box to confirm that the mailbox and its mail are destroyed.", "error")
        return redirect(url_for("mail.mailboxes"))
    answer = backend(
        "POST", "/v1/mailboxes/remove", {"account": g.account.id, "address": form.mailbox.data}
    )
    if answer is not None:
        record("mailbox_removed", answer["address"])
        flash(
            f"{answer['address']} is destroyed; its stored mail can never be read again.", "success"
        )
    return redirect(url_for("mail.mailboxes"))


@bp.route("/aliases", methods=["GET", "POST"])
@access("authenticated")
def aliases() -> Response | str | tuple[str, int]:
    form = AddAliasForm()
    _offer_domains(form, form.domain)
    form.destination.choices = [
        (m["address"], m["address"]) for m in _mailboxes() if m["state"] == "active"
    ]
    if form.validate_on_submit():
        address = f"{form.local_part.data}@{form.domain.data}"
        made = backend(
            "POST",
            "/v1/aliases",
            {
                "account": g.account.id,
                "address": address,
                "destinations": list(form.destination.data),
            },
        )
        if made is not None:
            record("alias_added", made["address"])
            flash(
                f"{made['address']} now delivers to {', '.join(made['destinations'])}.", "success"
            )
            return redirect(url_for("mail.aliases"))
    answer = backend("GET", f"/v1/aliases?account={g.account.id}") or {}
    status = 400 if form.errors else 200
    return render_template(
        "mail/aliases.html",
        form=form,
        aliases=answer.get("aliases", []),
    ), status


@bp.post("/aliases/remove")
@access("reauthenticated")
def alias_remove() -> Response:
    form = RemoveAliasForm()
    body = {"account": g.account.id, "address": form.alias.data}
    answer = backend("POST", "/v1/aliases/remove", body) if form.validate_on_submit() else None
    if answer is not None:
        record("alias_removed", answer["address"])
        flash(f"{answer['address']} is removed.", "success")
    return redirect(url_for("mail.aliases"))


@bp.route("/domains", methods=["GET", "POST"])
@access("authenticated")
def domains() -> Response | str | tuple[str, int]:
    form = DomainForm()
    if form.validate_on_submit():
        made = backend("POST", "/v1/domains", {"account": g.account.id, "name": form.domain.data})
        if made is not None:
            record("domain_added", made["name"])
            flash(f"{made['name']} is added. Publish the TXT record below, then verify.", "success")
            return redirect(url_for("mail.domains"))
    answer = backend("GET", f"/v1/domains?account={g.account.id}") or {}
    records = (backend("GET", f"/v1/domains/records?account={g.account.id}") or {}).get(
        "domains", {}
    )
    tls_reports = (backend("GET", f"/v1/tls-reports/summary?account={g.account.id}") or {}).get(
        "domains", {}
    )
    status = 400 if form.errors else 200
    return render_template(
        "mail/domains.html",
        tls_reports=tls_reports,
        records=records,
        global_domain=web().settings.global_domain,
        form=form,
        domains=answer.get("domains", []),
    ), status


@bp.post("/domains/verify")
@access("authenticated")
def domain_verify() -> Response:
    form = DomainForm()
    if form.validate_on_submit():
        answer = backend(
            "POST", "/v1/domains/verify", {"account": g.account.id, "name": form.domain.data}
        )
        if answer is not None:
            record(
                "domain_verified" if answer["verified"] else "domain_verify_failed", answer["name"]
            )
            if answer.get("state") == "suspended":
                flash(f"The TXT record of {answer['name']} is gone: it stays suspended.", "error")
            elif answer["verified"]:
                flash(f"{answer['name']} is verified.", "success")
            else:
                flash(f"The TXT record of {answer['name']} was not found yet.", "error")
    return redirect(url_for("mail.domains"))


@bp.post("/domains/remove")
@access("reauthenticated")
def domain_remove() -> Response:
    form = DomainRemoveForm()
    body = {"account": g.account.id, "name": form.domain.data}
    answer = backend("POST", "/v1/domains/remove", body) if form.validate_on_submit() else None
    if answer is not None:
        record("domain_removed", answer["name"])
        flash(f"{answer['name']} is removed.", "success")
    return redirect(url_for("mail.domains"))

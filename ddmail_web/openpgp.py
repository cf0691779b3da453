"""OpenPGP public keys: upload, list, activate per mailbox, deactivate, remove (through the
backend; the keyhandler validates and keeps the keys). A failed form re-renders the page with
the user's choice kept; a success redirects."""

from __future__ import annotations

import base64
import time
from typing import Any

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ddmail_common.errors import ApiError
from ddmail_web.forms import (
    OpenPgpActivateForm,
    OpenPgpDeactivateForm,
    OpenPgpRemoveForm,
    OpenPgpUploadForm,
)
from ddmail_web.mail import backend, record
from ddmail_web.sessions import access
from ddmail_web.state import web

bp = Blueprint("openpgp", __name__, url_prefix="/settings")

MAX_KEY_BYTES = 64 * 1024  # the keyhandler's limit; checked here too for a quick, clear answer
EXPIRY_WARNING_DAYS = 14
Page = tuple[str, int]


def grouped(fingerprint: str) -> str:
    return " ".join(fingerprint[i : i + 4] for i in range(0, len(fingerprint), 4))


def _call(path: str, body: dict[str, Any]) -> tuple[dict[str, Any] | None, int]:
    """POST to the backend; on failure flash its message and give the status to answer with
    (the backend's 4xx; a service that is down is explained on an ordinary page)."""
    try:
        return web().backend.call("POST", path, body), 200
    except ApiError as exc:
        flash(exc.message, "error")
        return None, exc.status if 400 <= exc.status < 500 else 200


def _mailboxes() -> list[str]:
    answer = backend("GET", f"/v1/mailboxes?account={g.account.id}") or {}
    return [m["address"] for m in answer.get("mailboxes", []) if m.get("state") == "active"]


def _page(
    status: int = 200,
    upload_form: OpenPgpUploadForm | None = None,
    kept: dict[str, str] | None = None,
    mailboxes: list[str] | None = None,
) -> Page:
    answer = backend("GET", f"/v1/openpgp/keys?account={g.account.id}") or {}
    now = int(time.time())
    keys: list[dict[str, Any]] = []
    key_of: dict[str, str] = {}  # mailbox -> grouped fingerprint of its active key
    for key in answer.get("keys", []):
        expires = key.get("expires_at")
        key = dict(key)
        key["grouped"] = grouped(str(key["fingerprint"]))
        key["expiring_soon"] = (
            expires is not None
            and not key.get("expired")
            and expires - now < EXPIRY_WARNING_DAYS * 86400
        )
        keys.append(key)
        for address in key.get("mailboxes", []):
            key_of[address] = key["grouped"]
    shown = request.args.get("uploaded", "").upper()
    new_key = next((k for k in keys if shown and k["fingerprint"] == shown), None)
    return render_template(
        "openpgp/keys.html",
        upload_form=upload_form or OpenPgpUploadForm(formdata=None),
        keys=keys,
        mailboxes=_mailboxes() if mailboxes is None else mailboxes,
        key_of=key_of,
        new_key=new_key,
        kept=kept or {},
    ), status


def _key_text(data: bytes) -> str:
    """What the API takes: armored text as it is, a binary key as base64."""
    if b"-----BEGIN PGP" in data:
        return data.decode("utf-8", errors="replace")
    return base64.b64encode(data).decode("ascii")


@bp.route("/openpgp", methods=["GET", "POST"])
@access("authenticated")
def keys() -> Response | Page:
    form = OpenPgpUploadForm()
    if not form.validate_on_submit():
        return _page(400 if form.errors else 200, upload_form=form)
    data = form.public_key.data.read(MAX_KEY_BYTES + 1)
    if len(data) > MAX_KEY_BYTES:
        flash(
            f"The key file is larger than {MAX_KEY_BYTES // 1024} KiB. Export the key without "
            "other people's signatures (gpg --export --armor --export-options export-minimal).",
            "error",
        )
        return _page(400, upload_form=form)
    if not data.strip():
        flash("The key file is empty.", "error")
        return _page(400, upload_form=form)
    made, status = _call("/v1/openpgp/keys", {"account": g.account.id, "key": _key_text(data)})
    if made is None:
        return _page(status, upload_form=form)
    if made.get("updated"):
        return _updated(made)
    record("openpgp_key_uploaded", grouped(made["fingerprint"]))
    return redirect(url_for("openpgp.keys", uploaded=made["fingerprint"]))


def _updated(made: dict[str, Any]) -> Response:
    """A re-upload of a key the account has: it was merged into the stored one."""
    shown = grouped(str(made["fingerprint"]))
    if not made.get("changed"):
        flash(f"The key {shown} is already in your account; nothing in it changed.", "success")
        return redirect(url_for("openpgp.keys"))
    record("openpgp_key_updated", shown)
    mailboxes = ", ".join(made.get("mailboxes", []))
    if made.get("unusable") or made.get("expired"):
        why = made.get("unusable") or "it has expired"
        held = (
            f" Mail for {mailboxes} is held back until you activate another key."
            if mailboxes
            else ""
        )
        flash(f"Key updated: {shown} can no longer encrypt ({why}).{held}", "error")
    else:
        until = made.get("expires_at")
        utc = current_app.jinja_env.filters["utc"]  # the date format of every panel page
        ends = f"it encrypts until {utc(int(until))} UTC" if until else "it has no expiry"
        still = f"; it stays active for {mailboxes}" if mailboxes else ""
        flash(f"Key updated: {shown} now holds what you uploaded; {ends}{still}.", "success")
    return redirect(url_for("openpgp.keys"))


@bp.post("/openpgp/activate")
@access("authenticated")
def activate() -> Response | Page:
    form = OpenPgpActivateForm()
    mailboxes = _mailboxes()
    form.mailbox.choices = [(m, m) for m in mailboxes]
    kept = {"fingerprint": str(form.fingerprint.data or "").upper(), "mailbox": ""}
    if not form.validate_on_submit():
        if form.fingerprint.errors:
            flash("That key is not one of yours; reload the page and try again.", "error")
        else:
            flash("Choose one of your mailboxes.", "error")
        return _page(400, kept=kept, mailboxes=mailboxes)
    kept["mailbox"] = form.mailbox.data
    answer, status = _call(
        "/v1/openpgp/activate",
        {"account": g.account.id, "address": form.mailbox.data, "fingerprint": kept["fingerprint"]},
    )
    if answer is None:
        return _page(status, kept=kept, mailboxes=mailboxes)
    record("openpgp_activated", f"{answer['address']} {grouped(answer['fingerprint'])}")
    flash(
        f"Mail arriving for {answer['address']} is now encrypted to the key "
        f"{grouped(answer['fingerprint'])} before it is stored.",
        "success",
    )
    return redirect(url_for("openpgp.keys"))


@bp.post("/openpgp/deactivate")
@access("authenticated")
def deactivate() -> Response | Page:
    form = OpenPgpDeactivateForm()
    if not form.validate_on_submit():
        flash("Choose the mailbox to stop encrypting with OpenPGP.", "error")
        return _page(400)
    answer, status = _call(
        "/v1/openpgp/deactivate", {"account": g.account.id, "address": form.mailbox.data}
    )
    if answer is None:
        return _page(status)
    record("openpgp_deactivated", f"{answer['address']} {grouped(answer['fingerprint'])}")
    flash(
        f"Mail arriving for {answer['address']} is no longer encrypted with OpenPGP (it is "
        "still encrypted at rest). Messages already stored stay as they are.",
        "success",
    )
    return redirect(url_for("openpgp.keys"))


@bp.post("/openpgp/remove")
@access("authenticated")
def remove() -> Response | Page:
    form = OpenPgpRemoveForm()
    if not form.validate_on_submit():
        flash("That key is not one of yours; reload the page and try again.", "error")
        return _page(400)
    fingerprint = form.fingerprint.data.upper()
    answer, status = _call(
        "/v1/openpgp/remove", {"account": g.account.id, "fingerprint": fingerprint}
    )
    if answer is None:
        return _page(status)
    record("openpgp_key_removed", grouped(fingerprint))
    flash(f"The key {grouped(fingerprint)} is removed.", "success")
    return redirect(url_for("openpgp.keys"))

"""The panel's app factory: public pages always; the account area when given a config."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from flask import Flask, Response, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect

from ddmail_common.client import ServiceClient
from ddmail_common.config import Config, PublicSettings, WebSettings
from ddmail_web import (
    account,
    account_data,
    funds_views,
    mail,
    openpgp,
    public,
    settings,
    totp_views,
    users,
    wkd,
)
from ddmail_web.credentials import Passwords
from ddmail_web.headers import add_security_headers
from ddmail_web.links import path
from ddmail_web.sessions import access, load_session, set_cookie
from ddmail_web.state import WebState, panel_database
from ddmail_web.transport import TransportSessionInterface
from ddmail_web.workslots import Busy, WorkSlots

MAX_REQUEST = 256 * 1024


def _utc(timestamp: int) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _size(count: int) -> str:
    """Bytes in binary units, one decimal from KiB on: the one way every page writes a size."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def _refuse_nameless_form_fields() -> tuple[str, int] | None:
    if request.method == "POST" and None in request.form:
        return render_template(
            "error.html",
            title="Malformed form",
            message="The form could not be read. Nothing was changed.",
        ), 400
    return None


def create_app(cfg: Config | None = None, overrides: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.session_interface = TransportSessionInterface()
    domain = cfg.web.global_domain if cfg else "ddmail.test"
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_REQUEST,
        GLOBAL_DOMAIN=domain,
        # Flask's cookie only holds the CSRF secret; named and flagged per transport.
        SESSION_COOKIE_NAME="ddmail_csrf",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the browser session
        # The strict check wants a Referer, which browsers never send us (no-referrer policy);
        # the token plus SameSite=Strict cookies carry the protection.
        WTF_CSRF_SSL_STRICT=False,
    )
    public.configure(
        app, cfg.public if cfg else PublicSettings(), cfg.web if cfg else WebSettings()
    )
    if cfg is not None:
        app.config["SECRET_KEY"] = hashlib.sha256(b"ddmail-csrf\x00" + cfg.secret("web")).digest()
        app.extensions["ddmail_web"] = WebState(
            db=panel_database(cfg),
            settings=cfg.web,
            backend=ServiceClient("web", cfg.secret("web"), cfg.backend_socket, "backend"),
            passwords=Passwords(cfg.web.argon2, WorkSlots(cfg.web.argon2_slots)),
        )
    if overrides:
        app.config.update(overrides)
    # A multipart part without a name becomes a form key of None, on which Flask-WTF's token
    # search crashes: such a body is malformed, so it is refused before that check runs.
    app.before_request(_refuse_nameless_form_fields)
    CSRFProtect(app)
    app.jinja_env.filters["utc"] = _utc
    app.jinja_env.filters["size"] = _size
    app.jinja_env.globals["path"] = path
    app.after_request(add_security_headers)

    @app.get("/")
    @access("public")
    def landing() -> str:
        return public.landing_page()

    # Every blueprint is registered so that every link can be built; only a configured panel
    # (with a database and a backend) has sessions.
    for blueprint in (
        public.bp,
        account.bp,
        mail.bp,
        settings.bp,
        users.bp,
        account_data.bp,
        totp_views.bp,
        funds_views.bp,
        wkd.bp,
        openpgp.bp,
    ):
        app.register_blueprint(blueprint)
    if cfg is not None:
        app.before_request(load_session)
        app.after_request(set_cookie)

    @app.errorhandler(CSRFError)
    def csrf_failed(_exc: CSRFError) -> tuple[str, int]:
        return render_template(
            "error.html",
            title="Form expired",
            message="The form was not accepted: it is missing its security "
            "token or has expired. Go back, reload the page and try again. "
            "Nothing was changed.",
        ), 400

    @app.errorhandler(Busy)
    def busy(_exc: Busy) -> tuple[str, int]:
        # Every argon2 run happens before the request changes anything.
        return render_template("busy.html"), 503

    @app.errorhandler(404)
    def not_found(_exc: Exception) -> tuple[str, int]:
        return render_template(
            "error.html", title="Page not found", message="There is no page at this address."
        ), 404

    @app.errorhandler(405)
    def not_allowed(_exc: Exception) -> tuple[str, int]:
        return render_template(
            "error.html",
            title="Not allowed",
            message="This page does not accept that kind of request.",
        ), 405

    @app.errorhandler(413)
    def too_large(_exc: Exception) -> tuple[str, int]:
        return render_template(
            "error.html",
            title="Too large",
            message="What you sent is larger than this form accepts "
            "(256 KiB). Nothing was changed.",
        ), 413

    @app.errorhandler(500)
    def crashed(_exc: Exception) -> tuple[str, int]:
        return render_template(
            "error.html",
            title="Something went wrong",
            message="The request could not be completed. Nothing was changed.",
        ), 500

    @app.get("/healthz")
    @access("public")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    return app

"""The panel's app factory. The full panel is built on this; here: public pages and headers."""

from __future__ import annotations

from flask import Flask, Response, render_template

from ddmail_web.headers import add_security_headers


def create_app(config: dict[str, object] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=256 * 1024,
        GLOBAL_DOMAIN="ddmail.test",
        SERVED_OVER_TLS=True,
    )
    if config:
        app.config.update(config)
    app.after_request(add_security_headers)

    @app.get("/")
    def landing() -> str:
        return render_template("landing.html", domain=app.config["GLOBAL_DOMAIN"])

    @app.errorhandler(404)
    def not_found(_exc: Exception) -> tuple[str, int]:
        return render_template(
            "error.html", title="Page not found", message="There is no page at this address."
        ), 404

    @app.errorhandler(500)
    def crashed(_exc: Exception) -> tuple[str, int]:
        return render_template(
            "error.html",
            title="Something went wrong",
            message="The request could not be completed. Nothing was changed.",
        ), 500

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    return app

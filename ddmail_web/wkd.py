"""Web Key Directory on the panel host: the direct method for the global domain, and the
advanced method's paths (`openpgpkey.<domain>` points here) for every domain."""

from __future__ import annotations

import base64
import re
from urllib.parse import urlencode

from flask import Blueprint, current_app, make_response
from werkzeug.wrappers import Response

from ddmail_common.errors import ApiError
from ddmail_web.sessions import access
from ddmail_web.state import web

bp = Blueprint("wkd", __name__, url_prefix="/.well-known/openpgpkey")
HASH = re.compile(r"^[ybndrfg8ejkmcpqxot1uwisza345h769]{32}\Z")


def _key(domain: str, hashed: str) -> Response:
    if not HASH.match(hashed) or len(domain) > 253:
        return make_response(("Not found\n", 404, {"Content-Type": "text/plain"}))
    try:
        query = urlencode({"domain": domain, "hash": hashed})
        answer = web().backend.call("GET", f"/v1/openpgp/wkd?{query}")
    except ApiError as exc:
        status = 404 if exc.status == 404 else 503
        return make_response(
            (
                "Not found\n" if status == 404 else "Try again later\n",
                status,
                {"Content-Type": "text/plain"},
            )
        )
    response = make_response(base64.b64decode(answer["key"]))
    response.headers["Content-Type"] = "application/octet-stream"
    response.headers["Access-Control-Allow-Origin"] = "*"  # the spec asks for it
    return response


def _policy() -> Response:
    return make_response(("", 200, {"Content-Type": "text/plain"}))


@bp.get("/hu/<hashed>")
@access("public")
def direct(hashed: str) -> Response:
    return _key(str(current_app.config["GLOBAL_DOMAIN"]), hashed)


@bp.get("/policy")
@access("public")
def direct_policy() -> Response:
    return _policy()


@bp.get("/<domain>/hu/<hashed>")
@access("public")
def advanced(domain: str, hashed: str) -> Response:
    return _key(domain.lower(), hashed)


@bp.get("/<domain>/policy")
@access("public")
def advanced_policy(domain: str) -> Response:
    return _policy()

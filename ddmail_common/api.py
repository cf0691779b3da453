"""Server side of the signed local HTTP: a Flask app whose every route declares its callers."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable, Iterable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from ddmail_common.errors import ApiError, bad_request
from ddmail_common.signing import SignatureError, Verifier

MAX_BODY = 256 * 1024
log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def json_response(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _where(frames: traceback.StackSummary) -> str:
    """The innermost frame of DDMail's own code, then the innermost of all: a library may drop
    its traceback (psycopg does), leaving only its own last line."""
    if not frames:
        return "?"
    spots = [f"{Path(f.filename).name}:{f.lineno}" for f in frames]
    ours = [s for f, s in zip(frames, spots, strict=True) if "/ddmail_" in f.filename]
    return " ".join(dict.fromkeys(ours[-1:] + spots[-1:]))


def make_api(name: str, verifier: Verifier) -> Flask:
    app = Flask(name)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions["ddmail_verifier"] = verifier

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return json_response(exc.status, exc.as_json())

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(status, "error")
        return json_response(status, {"error": code, "message": exc.description or code})

    @app.errorhandler(Exception)
    def _crash(exc: Exception) -> Response:
        # Where, not what: an exception's message or locals may carry input or a secret.
        where = _where(traceback.extract_tb(exc.__traceback__))
        # "error: " leads, as every error line a log check looks for (the stack's teardown).
        log.error("error: unhandled %s in %s at %s", type(exc).__name__, request.path, where)
        return json_response(500, {"error": "internal", "message": "Internal error."})

    return app


def authenticated(callers: Iterable[str]) -> Callable[[F], F]:
    """Require a valid signature from one of CALLERS (401 bad signature, 403 wrong caller)."""
    allowed = frozenset(callers)

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from flask import current_app

            verifier: Verifier = current_app.extensions["ddmail_verifier"]
            body = request.get_data(cache=True)
            path = request.full_path.rstrip("?")
            try:
                caller = verifier.verify(request.method, path, dict(request.headers), body)
            except SignatureError as exc:
                log.warning("rejected request to %s: %s", request.path, exc)
                raise ApiError(401, "bad_signature", "The request is not authentic.") from None
            if caller not in allowed:
                raise ApiError(403, "forbidden", "This caller may not use this endpoint.")
            g.caller = caller
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def json_body() -> dict[str, Any]:
    """The request's JSON object, or 400."""
    raw = request.get_data(cache=True)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise bad_request("The request body is not valid JSON.", "malformed_json") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.", "malformed_json")
    return data


def field(data: dict[str, Any], name: str, kind: type = str, max_len: int = 4096) -> Any:
    """A required field of the right type, or 400 naming it."""
    value = data.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise bad_request(f"The field '{name}' is missing or not a {kind.__name__}.")
    if isinstance(value, str) and (len(value) > max_len or "\x00" in value):
        raise bad_request(f"The field '{name}' is too long or contains a NUL byte.")
    return value

"""Security headers on every panel response."""

from __future__ import annotations

from urllib.parse import quote

from flask import Response, g, request

from ddmail_web import transport
from ddmail_web.public import onion_hostname

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def add_security_headers(response: Response) -> Response:
    h = response.headers
    h["Content-Security-Policy"] = CSP
    h["Referrer-Policy"] = "no-referrer"
    h["X-Content-Type-Options"] = "nosniff"
    h["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), interest-cohort=()"
    h["Cross-Origin-Opener-Policy"] = "same-origin"
    h["Cross-Origin-Resource-Policy"] = "same-origin"
    h["X-Frame-Options"] = "DENY"
    if g.get("user") is not None:
        h["Cache-Control"] = "no-store"  # nothing of an account may stay in a shared cache
    if transport.over_tls():
        h["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
        onion = onion_hostname()
        if onion:
            # Tor Browser offers the onion service instead (it honours this over HTTPS only).
            h["Onion-Location"] = f"http://{onion}{quote(request.path)}"
    return response

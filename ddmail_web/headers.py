"""Security headers on every panel response."""

from __future__ import annotations

from flask import Response, current_app, g

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
    if current_app.config.get("SERVED_OVER_TLS"):
        h["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
    return response

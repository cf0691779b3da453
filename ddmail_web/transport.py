"""Which way a request came: over the clearnet with TLS, or over Tor or I2P (issue 12, DN 43),
and the cookies each way gets.

nginx says which in X-Forwarded-Proto, overwriting whatever a client sent: "https" from the
clearnet server block, "http" from the loopback one that the onion service and i2pd's tunnel
forward to. The panel never records it: only cookies and headers differ.

Over TLS a cookie is `__Host-<name>` and Secure. Over Tor and I2P the browser sees plain HTTP:
Tor Browser counts .onion as a secure context, but an I2P browser's proxy gives
http://….b32.i2p no such standing and browsers drop a Secure cookie set over plain HTTP. There
the cookie is `<name>`, not Secure, still host-only, HttpOnly, SameSite=Strict and Path=/:
the network encrypts end to end and the name is reachable only through it, so Secure would
protect nothing. A cookie of one kind is never read the other way.
"""

from __future__ import annotations

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.wrappers import Response


def over_tls() -> bool:
    return request.headers.get("X-Forwarded-Proto", "https") != "http"


def cookie_name(name: str) -> str:
    return f"__Host-{name}" if over_tls() else name


def read_cookie(name: str) -> str | None:
    return request.cookies.get(cookie_name(name))


def set_cookie(response: Response, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(
        cookie_name(name),
        value,
        max_age=max_age,
        secure=over_tls(),
        httponly=True,
        samesite="Strict",
        path="/",
    )


def delete_cookie(response: Response, name: str) -> None:
    response.delete_cookie(
        cookie_name(name), secure=over_tls(), httponly=True, samesite="Strict", path="/"
    )


class TransportSessionInterface(SecureCookieSessionInterface):
    """Flask's own cookie (it holds only the CSRF secret) named and flagged as above."""

    def get_cookie_name(self, app: Flask) -> str:
        return cookie_name(app.config["SESSION_COOKIE_NAME"])

    def get_cookie_secure(self, app: Flask) -> bool:
        return over_tls()

"""The panel as users reach it: nginx holds TLS and hands requests to gunicorn."""

from __future__ import annotations

import http.client
import ssl
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from tests.panel_down import panel_down
from tests.stackrun import RunningStack

SECURITY_HEADERS = (
    "Content-Security-Policy",
    "Referrer-Policy",
    "X-Content-Type-Options",
    "Permissions-Policy",
    "Cross-Origin-Opener-Policy",
    "Cross-Origin-Resource-Policy",
    "X-Frame-Options",
    "Strict-Transport-Security",
)


def _connect(stack: RunningStack) -> http.client.HTTPSConnection:
    url = urlsplit(stack.info["web_url"])
    return http.client.HTTPSConnection(url.hostname or "", url.port, context=stack.tls())


def test_panel_answers_many_requests_on_one_kept_alive_tls_connection(
    stack: RunningStack,
) -> None:
    conn = _connect(stack)
    try:
        for _ in range(3):
            conn.request("GET", "/")
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200
            assert b"DDMail" in body
            assert resp.getheader("Content-Security-Policy", "").startswith("default-src 'none'")
            assert "max-age" in resp.getheader("Strict-Transport-Security", "")
            # No product or version in the Server header.
            assert resp.getheader("Server", "") in ("", "nginx")
    finally:
        conn.close()


def test_oversized_form_gets_the_panels_own_413_page(stack: RunningStack) -> None:
    conn = _connect(stack)
    try:
        body = b"x=" + b"a" * (300 * 1024)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        conn.request("POST", "/login", body=body, headers=headers)
        resp = conn.getresponse()
        page = resp.read().decode()
        assert resp.status == 413
        assert "Nothing was changed" in page
        assert resp.getheader("Content-Security-Policy")
    finally:
        conn.close()


def test_an_oversized_form_over_http2_gets_the_panels_own_413_page_too(
    stack: RunningStack,
) -> None:
    """Regression: browsers speak HTTP/2, over which nginx checked the size again on the way to
    the error page and sent its own bare one (nginx/nginx#1356)."""
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--http2",
            "--cacert",
            stack.info["tls_ca"],
            "-w",
            "\n%{http_version}",
            "-H",
            "Content-Type: application/x-www-form-urlencoded",
            "--data-binary",
            "@-",
            stack.info["web_url"] + "/login",
        ],
        input=b"x=" + b"a" * (300 * 1024),
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    page, _, version = out.rpartition("\n")
    assert version == "2"
    assert "<title>Error: Too large" in page and "Nothing was changed" in page


def test_far_oversized_body_is_stopped_at_the_front_with_the_panels_look(
    stack: RunningStack,
) -> None:
    conn = _connect(stack)
    try:
        conn.request("GET", "/")
        app_resp = conn.getresponse()
        app_resp.read()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        conn.request("POST", "/login", body=b"x=" + b"a" * (2 * 1024 * 1024), headers=headers)
        resp = conn.getresponse()
        page = resp.read().decode()
    finally:
        conn.close()
    assert resp.status == 413
    assert "Nothing was changed" in page and "nginx" not in page
    _assert_same_security_headers(resp, app_resp)


def _assert_same_security_headers(
    nginx_resp: http.client.HTTPResponse, app_resp: http.client.HTTPResponse
) -> None:
    """nginx's own pages carry the panel's security headers (guards the two copies)."""
    for name in SECURITY_HEADERS:
        assert nginx_resp.getheader(name) == app_resp.getheader(name), name
    assert nginx_resp.getheader("Cache-Control") == "no-store"


def test_panel_down_gets_a_clear_page_with_the_panels_headers(
    stack: RunningStack, tmp_path: Path
) -> None:
    """A second nginx from the same role template, whose panel socket has nobody behind it."""
    with panel_down(tmp_path / "front", stack.root) as front:
        ctx = ssl.create_default_context(cafile=str(front.ca_cert))
        conn = http.client.HTTPSConnection("localhost", front.web_port, context=ctx)
        conn.request("GET", "/settings")
        resp = conn.getresponse()
        page = resp.read().decode()
        conn.close()
        app = _connect(stack)
        app.request("GET", "/")
        app_resp = app.getresponse()
        app_resp.read()
        app.close()
    assert resp.status == 502
    assert "The panel is unavailable" in page and "Nothing was changed" in page
    assert "nginx" not in page
    _assert_same_security_headers(resp, app_resp)


def test_request_bodies_never_touch_the_disk(stack: RunningStack) -> None:
    """Form bodies carry passwords and key files: nginx must not spool them to a file."""
    test_oversized_form_gets_the_panels_own_413_page(stack)
    log = (Path(stack.info["log_dir"]) / "nginx.log").read_text()
    assert "buffered to a temporary file" not in log
    spool = stack.root / "run" / "nginx" / "body"
    assert not spool.exists() or not any(spool.iterdir())


def test_bodies_over_the_limit_always_get_413_never_502(stack: RunningStack) -> None:
    """Regression: when the panel itself refused an over-limit body before reading it, nginx,
    still sending, sometimes answered 502 (the 'unavailable' page) instead."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    statuses = []
    for extra_kib in range(1, 200, 10):
        conn = _connect(stack)
        try:
            conn.request(
                "POST", "/login", body=b"x=" + b"a" * ((256 + extra_kib) * 1024), headers=headers
            )
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
        finally:
            conn.close()
    assert set(statuses) == {413}
    conn = _connect(stack)
    try:  # under the limit, the panel reads the form itself (and finds no valid login in it)
        conn.request("POST", "/login", body=b"x=" + b"a" * (200 * 1024), headers=headers)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 400
    finally:
        conn.close()

"""The panel as users reach it: nginx holds TLS and hands requests to gunicorn."""

from __future__ import annotations

import http.client
from pathlib import Path
from urllib.parse import urlsplit

from tests.stackrun import RunningStack


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


def test_far_oversized_body_is_stopped_at_the_front(stack: RunningStack) -> None:
    conn = _connect(stack)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        conn.request("POST", "/login", body=b"x=" + b"a" * (2 * 1024 * 1024), headers=headers)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 413
    finally:
        conn.close()


def test_request_bodies_never_touch_the_disk(stack: RunningStack) -> None:
    """Form bodies carry passwords and key files: nginx must not spool them to a file."""
    test_oversized_form_gets_the_panels_own_413_page(stack)
    log = (Path(stack.info["log_dir"]) / "nginx.log").read_text()
    assert "buffered to a temporary file" not in log
    spool = stack.root / "run" / "nginx" / "body"
    assert not spool.exists() or not any(spool.iterdir())

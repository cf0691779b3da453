"""The public landing page: real content, strict headers, no JavaScript."""

from __future__ import annotations

import re

from ddmail_web.app import create_app


def test_landing_page_explains_the_service_without_script() -> None:
    resp = create_app().test_client().get("/")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert "Logged in as user: Not logged in" in html
    assert "IMAPS" in html and "ddmail.test" in html
    assert not re.search(r"<script|\son[a-z]+=", html, re.IGNORECASE)


def test_every_response_carries_the_security_headers() -> None:
    client = create_app().test_client()
    for path in ("/", "/no-such-page"):
        headers = client.get(path).headers
        assert headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "max-age=" in headers["Strict-Transport-Security"]
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin"


def test_unknown_page_is_a_plain_404() -> None:
    resp = create_app().test_client().get("/no-such-page")
    assert resp.status_code == 404
    assert "There is no page at this address." in resp.get_data(as_text=True)

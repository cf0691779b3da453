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


def _landing(public: dict[str, object]) -> str:
    import tempfile
    from pathlib import Path

    from tests.services import write_config

    cfg = write_config(Path(tempfile.mkdtemp()), "sqlite://", {"public": public})
    return create_app(cfg).test_client().get("/").get_data(as_text=True)


def _reachable(page: str) -> str:
    found = re.search(r'<li id="reachable">([^<]*)</li>', page)
    assert found is not None
    return found.group(1)


def test_landing_names_tor_and_i2p_only_when_configured() -> None:
    assert _reachable(_landing({})) == "Reachable over the clearnet."
    onion, i2p = "a" * 56 + ".onion", "b" * 52 + ".b32.i2p"
    assert "Tor" in _reachable(_landing({"onion_hostname": onion}))
    assert "I2P" not in _reachable(_landing({"onion_hostname": onion}))
    assert "I2P" in _reachable(_landing({"i2p_hostname": i2p}))
    assert "Tor" not in _reachable(_landing({"i2p_hostname": i2p}))
    assert _reachable(_landing({"onion_hostname": onion, "i2p_hostname": i2p})) == (
        "Reachable over the clearnet, Tor and I2P."
    )


def test_landing_claims_no_more_than_the_about_page() -> None:
    page = " ".join(_landing({}).split())
    assert "Nobody at DDMail can read" not in page
    # The limit the about page states (a password captured at the next login) is said here too.
    assert "capture your password at your next login" in page
    assert 'href="/about"' in page


def test_landing_shows_the_configured_mail_host_and_ports() -> None:
    page = _landing({"mail_hostname": "localhost", "imaps_port": 20993, "submission_port": 20587})
    assert "localhost" in page and "port 20993" in page and "port 20587" in page

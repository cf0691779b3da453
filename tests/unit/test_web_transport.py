"""The panel over Tor and I2P (issue 12): what nginx's loopback listener for the onion service
and the I2P tunnel hands on (plain HTTP, X-Forwarded-Proto: http) gets working cookies without
`__Host-`/Secure and no HSTS; the clearnet keeps both and points Tor Browser at the onion."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from flask import Flask

from ddmail_web.app import create_app
from tests.services import Services
from tests.webclient import Browser

ONION = "a" * 56 + ".onion"


@pytest.fixture
def onion_app(env: tuple[Services, Flask]) -> Iterator[Flask]:
    cfg = env[0].cfg
    yield create_app(
        dataclasses.replace(cfg, public=dataclasses.replace(cfg.public, onion_hostname=ONION))
    )


def _cookie(headers: list[str], name: str) -> str:
    return next(c for c in headers if c.split("=", 1)[0] == name)


def test_register_and_log_in_over_the_onion_listener(onion_app: Flask) -> None:
    browser = Browser(onion_app, onion=ONION)
    reg = browser.register()
    resp = browser.login(reg)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/settings")
    cookie = _cookie(resp.headers.getlist("Set-Cookie"), "ddmail_session")
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie
    assert "Secure" not in cookie and "Domain" not in cookie
    page = browser.get("/settings")
    assert f"Logged in as user: {reg.username}" in page.get_data(as_text=True)
    assert "Strict-Transport-Security" not in page.headers
    assert "Onion-Location" not in page.headers
    assert not any("__Host-" in c for c in page.headers.getlist("Set-Cookie"))


def test_the_clearnet_keeps_host_cookies_and_hsts_and_names_the_onion(onion_app: Flask) -> None:
    browser = Browser(onion_app)
    resp = browser.login(browser.register())
    cookie = _cookie(resp.headers.getlist("Set-Cookie"), "__Host-ddmail_session")
    assert "Secure" in cookie
    page = browser.get("/help")
    assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    assert page.headers["Onion-Location"] == f"http://{ONION}/help"


def test_a_cookie_of_one_way_is_not_read_the_other_way(onion_app: Flask) -> None:
    clearnet = Browser(onion_app)
    reg = clearnet.register()
    token = _cookie(clearnet.login(reg).headers.getlist("Set-Cookie"), "__Host-ddmail_session")
    value = token.split("=", 1)[1].split(";")[0]
    anon = Browser(onion_app, onion=ONION)
    anon.client.set_cookie("__Host-ddmail_session", value, domain=ONION)
    assert "Logged in as user: Not logged in" in anon.get("/").get_data(as_text=True)
    anon.client.set_cookie("ddmail_session", value, domain=ONION)  # the same token, this way's name
    assert f"Logged in as user: {reg.username}" in anon.get("/").get_data(as_text=True)


def test_the_onion_host_gets_its_own_autoconfig(onion_app: Flask) -> None:
    xml = Browser(onion_app, onion=ONION).get("/.well-known/autoconfig/mail/config-v1.1.xml")
    text = xml.get_data(as_text=True)
    assert f"<hostname>{ONION}</hostname>" in text
    assert "<port>143</port>" in text and "<port>587</port>" in text
    assert "<socketType>plain</socketType>" in text and "SSL" not in text
    clearnet = Browser(onion_app).get("/.well-known/autoconfig/mail/config-v1.1.xml")
    assert ONION not in clearnet.get_data(as_text=True)


def test_the_help_page_gives_the_onion_ports_without_tls(onion_app: Flask) -> None:
    page = Browser(onion_app).get("/help").get_data(as_text=True)
    assert f"http://{ONION}/" in page
    section = page.split('id="tor-settings"', 1)[1].split("</table>", 1)[0]
    assert ">143<" in section and ">587<" in section and "None" in section

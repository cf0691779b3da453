"""Public pages and well-known files: content, content types, no script, strict headers."""

from __future__ import annotations

import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ddmail_common.config import ConfigError
from ddmail_web.app import create_app
from tests.services import write_config

PAGES = ("/help", "/about", "/terms", "/contact", "/pricing")
AUTOCONFIG = "/.well-known/autoconfig/mail/config-v1.1.xml"


def make_app(sections: dict[str, dict[str, object]] | None = None) -> Flask:
    """The panel as a deployment with these config sections ([public], [web], [backend]) runs
    it: the config is parsed and validated like the real one."""
    return create_app(write_config(Path(tempfile.mkdtemp()), "sqlite://", sections))


@pytest.fixture
def client() -> Iterator[FlaskClient]:
    yield make_app().test_client()


def html(client: FlaskClient, path: str) -> str:
    resp = client.get(path)
    assert resp.status_code == 200, path
    return resp.get_data(as_text=True)


# --- every page ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_page_is_complete_html_without_script(client: FlaskClient, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    page = resp.get_data(as_text=True)
    assert re.search(r"<title>[^<]+· DDMail</title>", page)
    assert len(re.findall(r"<h1>", page)) == 1
    assert "Logged in as user: Not logged in" in page
    assert not re.search(r"<script", page, re.IGNORECASE)
    assert not re.search(r"\son[a-z]+\s*=", page, re.IGNORECASE)
    assert not re.search(r"\sstyle\s*=", page, re.IGNORECASE)
    assert ":wq" not in page


@pytest.mark.parametrize("path", PAGES)
def test_page_links_only_to_our_own_pages(client: FlaskClient, path: str) -> None:
    page = html(client, path)
    for url in re.findall(r'(?:href|src|action)="([^"]*)"', page):
        assert url.startswith(("/", "#", "mailto:")), url
        assert not url.startswith("//"), url
    # The navigation reaches every public page.
    for other in PAGES:
        assert f'href="{other}"' in page


@pytest.mark.parametrize(
    "path", [*PAGES, "/.well-known/security.txt", "/.well-known/mta-sts.txt", AUTOCONFIG]
)
def test_every_public_response_has_the_security_headers(client: FlaskClient, path: str) -> None:
    headers = client.get(path).headers
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "style-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", [*PAGES, "/.well-known/security.txt"])
def test_public_routes_are_get_only(client: FlaskClient, path: str) -> None:
    assert client.post(path).status_code == 405


def test_config_values_are_escaped_in_pages() -> None:
    client = make_app({"public": {"security_contact": ["https://x.example/<b>r</b>"]}})
    page = html(client.test_client(), "/contact")
    assert "<b>r</b>" not in page and "&lt;b&gt;r&lt;/b&gt;" in page


# --- help ------------------------------------------------------------------------------------


def test_help_gives_the_client_settings(client: FlaskClient) -> None:
    page = html(client, "/help")
    assert "mail.ddmail.test" in page
    for port in ("993", "587", "465"):
        assert port in page
    assert "STARTTLS" in page and "SSL/TLS" in page
    assert "full e-mail address" in page
    # No onion or I2P address is configured: the page says so plainly.
    assert "has not published a Tor onion address" in page
    assert "has not published an I2P address" in page
    # Passwords: generated, shown once, reset with the key file.
    assert "shown only once" in page
    assert "key file" in page and "Reset password" in page


def test_help_shows_the_configured_host_names() -> None:
    onion = "a" * 56 + ".onion"
    i2p = "b" * 52 + ".b32.i2p"
    client = make_app(
        {
            "public": {
                "mail_hostname": "imap.example.org",
                "onion_hostname": onion,
                "i2p_hostname": i2p,
            }
        }
    ).test_client()
    page = html(client, "/help")
    assert "imap.example.org" in page and "mail.ddmail.test" not in page
    assert onion in page and i2p in page
    assert "has not published" not in page
    assert "SOCKS" in page


# --- about, terms, contact, pricing ----------------------------------------------------------


def test_about_states_the_limits_honestly(client: FlaskClient) -> None:
    page = html(client, "/about")
    for heading in ("What is protected", "Against whom", "What is not protected"):
        assert heading in page
    for limit in ("Metadata", "Mail on its way through the server", "next login", "not end-to-end"):
        assert limit in page
    assert "mailto:security@ddmail.test" in page


def test_contact_lists_postmaster_abuse_and_security_txt(client: FlaskClient) -> None:
    page = html(client, "/contact")
    assert "mailto:postmaster@ddmail.test" in page
    assert "mailto:abuse@ddmail.test" in page
    assert 'href="/.well-known/security.txt"' in page


def test_pricing_reads_the_config() -> None:
    page = html(make_app().test_client(), "/pricing")
    assert "1.00 EUR per started GB per month" in page
    assert "Voucher" in page and "payment reference" in page
    client = make_app({"web": {"price_cents_per_gb_month": 3000, "currency": "SEK"}})
    page = html(client.test_client(), "/pricing")
    assert "30.00 SEK per started GB per month" in page and "EUR" not in page


def test_terms_page_exists(client: FlaskClient) -> None:
    page = html(client, "/terms")
    assert "Acceptable use" in page and "abuse@ddmail.test" in page


# --- security.txt ----------------------------------------------------------------------------


def fields(body: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in body.splitlines():
        name, sep, value = line.partition(": ")
        assert sep, line
        out.setdefault(name, []).append(value)
    return out


def test_security_txt_has_the_rfc_9116_fields(client: FlaskClient) -> None:
    resp = client.get("/.well-known/security.txt")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    got = fields(resp.get_data(as_text=True))
    assert got["Contact"] == ["mailto:security@ddmail.test"]
    assert got["Preferred-Languages"] == ["en"]
    assert got["Canonical"] == ["https://ddmail.test/.well-known/security.txt"]
    assert got["Policy"] == ["https://ddmail.test/about"]
    assert len(got["Expires"]) == 1
    expires_text = got["Expires"][0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", expires_text)
    expires = datetime.strptime(expires_text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    now = datetime.now(UTC)
    assert now + timedelta(days=300) < expires <= now + timedelta(days=365)


def test_security_txt_uses_the_configured_panel_url_and_contact() -> None:
    client = make_app(
        {
            "web": {"panel_url": "https://panel.example.org/"},
            "public": {"security_contact": ["sec@example.org", "https://example.org/report"]},
        }
    ).test_client()
    got = fields(client.get("/.well-known/security.txt").get_data(as_text=True))
    assert got["Canonical"] == ["https://panel.example.org/.well-known/security.txt"]
    assert got["Policy"] == ["https://panel.example.org/about"]
    assert got["Contact"] == ["mailto:sec@example.org", "https://example.org/report"]


@pytest.mark.parametrize(
    "sections",
    [
        {"web": {"panel_url": "https://x.example\nContact: mailto:evil@example.org"}},
        {"public": {"security_contact": ["a@example.org\nPolicy: x"]}},
        {"web": {"global_domain": 'x"><evil/>'}},
        {"public": {"onion_hostname": "example.org"}},
        {"public": {"imaps_port": 0}},
    ],
)
def test_config_refuses_a_value_that_would_break_a_public_page(
    sections: dict[str, dict[str, object]],
) -> None:
    with pytest.raises(ConfigError):
        make_app(sections)


# --- MTA-STS ---------------------------------------------------------------------------------


def test_mta_sts_policy_is_exact_with_crlf(client: FlaskClient) -> None:
    resp = client.get("/.well-known/mta-sts.txt")
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    assert resp.get_data() == (
        b"version: STSv1\r\nmode: enforce\r\nmx: mail.ddmail.test\r\nmax_age: 604800\r\n"
    )


def test_mta_sts_policy_reads_mode_and_mx_from_config() -> None:
    client = make_app(
        {"public": {"mta_sts_mode": "testing", "mta_sts_mx": ["mx1.example.org", "*.Example.NET"]}}
    ).test_client()
    assert client.get("/.well-known/mta-sts.txt").get_data() == (
        b"version: STSv1\r\nmode: testing\r\n"
        b"mx: mx1.example.org\r\nmx: *.example.net\r\nmax_age: 604800\r\n"
    )


def test_mta_sts_names_the_configured_mail_host_not_mail_dot_global_domain() -> None:
    client = make_app({"backend": {"mail_hostname": "mx.example.net"}}).test_client()
    assert client.get("/.well-known/mta-sts.txt").get_data() == (
        b"version: STSv1\r\nmode: enforce\r\nmx: mx.example.net\r\nmax_age: 604800\r\n"
    )


@pytest.mark.parametrize(
    "public",
    [
        {"mta_sts_mode": "reject"},
        {"mta_sts_mx": ["mx.example.org\r\nmode: none"]},
        {"mta_sts_mx": ["not a host"]},
    ],
)
def test_mta_sts_refuses_a_bad_config(public: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        make_app({"public": public})


# --- autoconfig ------------------------------------------------------------------------------


def parse(body: bytes) -> ET.Element:
    return ET.fromstring(body)  # noqa: S314 - our own output, not untrusted XML


def server(el: ET.Element) -> tuple[str | None, ...]:
    return tuple(
        el.findtext(name)
        for name in ("hostname", "port", "socketType", "username", "authentication")
    )


@pytest.mark.parametrize("path", [AUTOCONFIG, "/mail/config-v1.1.xml"])
def test_autoconfig_lists_the_servers(client: FlaskClient, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 200
    assert resp.mimetype == "application/xml"
    root = parse(resp.get_data())
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id") == "ddmail.test"
    assert provider.findtext("domain") == "ddmail.test"
    incoming = provider.findall("incomingServer")
    assert [(s.get("type"), *server(s)) for s in incoming] == [
        ("imap", "mail.ddmail.test", "993", "SSL", "%EMAILADDRESS%", "password-cleartext")
    ]
    outgoing = provider.findall("outgoingServer")
    assert [(s.get("type"), *server(s)) for s in outgoing] == [
        ("smtp", "mail.ddmail.test", "465", "SSL", "%EMAILADDRESS%", "password-cleartext"),
        ("smtp", "mail.ddmail.test", "587", "STARTTLS", "%EMAILADDRESS%", "password-cleartext"),
    ]


def test_autoconfig_never_reflects_the_query(client: FlaskClient) -> None:
    plain = client.get(AUTOCONFIG).get_data()
    resp = client.get(AUTOCONFIG, query_string={"emailaddress": "<script>x</script>"})
    assert resp.status_code == 200
    body = resp.get_data()
    assert b"<script" not in body and b"script" not in body
    assert body == plain
    parse(body)


def test_autoconfig_names_the_configured_mail_host_and_ports() -> None:
    client = make_app(
        {
            "backend": {"mail_hostname": "mx.example.net"},
            "public": {"imaps_port": 10993, "submission_port": 10587, "submissions_port": 10465},
        }
    ).test_client()
    provider = parse(client.get(AUTOCONFIG).get_data()).find("emailProvider")
    assert provider is not None
    servers = [server(s)[:3] for s in provider if s.tag.endswith("Server")]
    assert servers == [
        ("mx.example.net", "10993", "SSL"),
        ("mx.example.net", "10465", "SSL"),
        ("mx.example.net", "10587", "STARTTLS"),
    ]
    help_page = html(client, "/help")
    assert "mx.example.net" in help_page and "mail.ddmail.test" not in help_page
    assert all(port in help_page for port in ("10993", "10587", "10465"))

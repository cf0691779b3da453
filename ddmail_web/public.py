"""Public pages of the panel: help, about, terms, contact, pricing and the well-known files.

Everything here is readable without logging in and without JavaScript. Values come from the app
config (set by the operator); a page never reflects request input.

Config keys (all optional except ``GLOBAL_DOMAIN``):

``MAIL_HOSTNAME``     IMAP and submission host name; default ``mail.<GLOBAL_DOMAIN>``.
``ONION_HOSTNAME``    Tor onion address of the mail service; default None (not published).
``I2P_HOSTNAME``      I2P address of the mail service; default None (not published).
``PANEL_URL``         public URL of this panel; default ``https://<GLOBAL_DOMAIN>``.
``SECURITY_CONTACT``  security.txt contact URI (or a list); default ``mailto:security@<domain>``.
``PRICE_PER_MONTH``   price text such as "1 EUR"; default ``DEFAULT_PRICE_PER_MONTH``.
``PRICE_NOTE``        one sentence shown under the price; default ``DEFAULT_PRICE_NOTE``.
``MTA_STS_MODE``      ``enforce`` (default), ``testing`` or ``none``.
``MTA_STS_MX``        list of MX host patterns for MTA-STS; default ``[MAIL_HOSTNAME]``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from flask import Blueprint, Response, current_app, render_template

from ddmail_common.validators import InvalidInput, normalize_domain
from ddmail_web.sessions import access

bp = Blueprint("public", __name__)

IMAPS_PORT = 993
SUBMISSION_PORT = 587  # STARTTLS
SUBMISSIONS_PORT = 465  # implicit TLS

DEFAULT_PRICE_PER_MONTH = "1 EUR"
DEFAULT_PRICE_NOTE = "The price is for one account and is paid in advance from its funds."

MTA_STS_MODES = frozenset({"enforce", "testing", "none"})
MTA_STS_MAX_AGE = 604800  # one week, in seconds
# RFC 9116 section 2.5.5 recommends an Expires value less than a year in the future.
SECURITY_TXT_LIFETIME = timedelta(days=364)


# --- config ----------------------------------------------------------------------------------


def _config_text(key: str) -> str | None:
    """The config value KEY as a stripped one-line string, or None when unset or empty."""
    value = current_app.config.get(key)
    if value is None:
        return None
    text = str(value).strip()
    if any(ch in text for ch in "\r\n\0"):
        raise ValueError(f"config key {key} must be a single line")
    return text or None


def _global_domain() -> str:
    domain = _config_text("GLOBAL_DOMAIN")
    if domain is None:
        raise ValueError("config key GLOBAL_DOMAIN is not set")
    return domain


def _mail_hostname() -> str:
    return _config_text("MAIL_HOSTNAME") or f"mail.{_global_domain()}"


def _panel_url() -> str:
    return (_config_text("PANEL_URL") or f"https://{_global_domain()}").rstrip("/")


def _text_list(key: str, default: list[str]) -> list[str]:
    value = current_app.config.get(key)
    if value is None:
        return default
    items: Iterable[object] = [value] if isinstance(value, str) else value
    out = []
    for item in items:
        text = str(item).strip()
        if any(ch in text for ch in "\r\n\0"):
            raise ValueError(f"config key {key} must hold single-line values")
        if text:
            out.append(text)
    return out or default


def _security_contacts() -> list[str]:
    contacts = _text_list("SECURITY_CONTACT", [f"mailto:security@{_global_domain()}"])
    # RFC 9116 wants a URI; a bare address is what an operator most likely means.
    return [f"mailto:{c}" if "@" in c and ":" not in c else c for c in contacts]


def _page(template: str, **extra: object) -> str:
    domain = _global_domain()
    return render_template(
        template,
        domain=domain,
        mail_hostname=_mail_hostname(),
        onion_hostname=_config_text("ONION_HOSTNAME"),
        i2p_hostname=_config_text("I2P_HOSTNAME"),
        imaps_port=IMAPS_PORT,
        submission_port=SUBMISSION_PORT,
        submissions_port=SUBMISSIONS_PORT,
        security_contacts=_security_contacts(),
        **extra,
    )


def _plain_text(body: str) -> Response:
    return Response(body, mimetype="text/plain")  # Flask adds "; charset=utf-8"


# --- pages -----------------------------------------------------------------------------------


@bp.get("/help")
@access("public")
def help_page() -> str:
    return _page("public/help.html")


@bp.get("/about")
@access("public")
def about() -> str:
    return _page("public/about.html")


@bp.get("/terms")
@access("public")
def terms() -> str:
    return _page("public/terms.html")


@bp.get("/contact")
@access("public")
def contact() -> str:
    return _page("public/contact.html")


@bp.get("/pricing")
@access("public")
def pricing() -> str:
    return _page(
        "public/pricing.html",
        price=_config_text("PRICE_PER_MONTH") or DEFAULT_PRICE_PER_MONTH,
        price_note=_config_text("PRICE_NOTE") or DEFAULT_PRICE_NOTE,
    )


# --- well-known files ------------------------------------------------------------------------


def security_txt(now: datetime) -> str:
    """The RFC 9116 security.txt body, valid from NOW (an aware datetime)."""
    expires = (now.astimezone(UTC) + SECURITY_TXT_LIFETIME).replace(microsecond=0)
    panel = _panel_url()
    lines = [f"Contact: {contact}" for contact in _security_contacts()]
    lines += [
        f"Expires: {expires.strftime('%Y-%m-%dT%H:%M:%SZ')}",
        "Preferred-Languages: en",
        f"Canonical: {panel}/.well-known/security.txt",
        f"Policy: {panel}/about",
    ]
    return "\n".join(lines) + "\n"


@bp.get("/.well-known/security.txt")
@access("public")
def security_txt_file() -> Response:
    return _plain_text(security_txt(datetime.now(UTC)))


def _mta_sts_mx(pattern: str) -> str:
    """PATTERN as an RFC 8461 mx value (a host name, or ``*.`` and a domain), or raise."""
    wildcard = pattern.startswith("*.")
    try:
        host = normalize_domain(pattern.removeprefix("*."))
    except InvalidInput as exc:
        raise ValueError(f"config key MTA_STS_MX: {pattern!r}: {exc}") from None
    return f"*.{host}" if wildcard else host


def mta_sts_policy() -> str:
    """The RFC 8461 policy body: CRLF-separated key/value lines."""
    mode = _config_text("MTA_STS_MODE") or "enforce"
    if mode not in MTA_STS_MODES:
        raise ValueError(f"config key MTA_STS_MODE must be one of {sorted(MTA_STS_MODES)}")
    mx_hosts = [_mta_sts_mx(mx) for mx in _text_list("MTA_STS_MX", [_mail_hostname()])]
    lines = ["version: STSv1", f"mode: {mode}"]
    lines += [f"mx: {mx}" for mx in mx_hosts]
    lines.append(f"max_age: {MTA_STS_MAX_AGE}")
    return "\r\n".join(lines) + "\r\n"


@bp.get("/.well-known/mta-sts.txt")
@access("public")
def mta_sts_file() -> Response:
    return _plain_text(mta_sts_policy())


def _server(
    parent: ET.Element, tag: str, kind: str, host: str, port: int, socket_type: str
) -> None:
    server = ET.SubElement(parent, tag, type=kind)
    for name, text in (
        ("hostname", host),
        ("port", str(port)),
        ("socketType", socket_type),
        ("username", "%EMAILADDRESS%"),
        ("authentication", "password-cleartext"),
    ):
        ET.SubElement(server, name).text = text


def autoconfig_xml() -> bytes:
    """Thunderbird autoconfig (clientConfig 1.1) for addresses on the global domain."""
    domain = _global_domain()
    host = _mail_hostname()
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    ET.SubElement(provider, "domain").text = domain
    ET.SubElement(provider, "displayName").text = f"DDMail ({domain})"
    ET.SubElement(provider, "displayShortName").text = "DDMail"
    _server(provider, "incomingServer", "imap", host, IMAPS_PORT, "SSL")
    _server(provider, "outgoingServer", "smtp", host, SUBMISSIONS_PORT, "SSL")
    _server(provider, "outgoingServer", "smtp", host, SUBMISSION_PORT, "STARTTLS")
    doc = ET.SubElement(provider, "documentation", url=f"{_panel_url()}/help")
    ET.SubElement(doc, "descr", lang="en").text = "Mail program settings"
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body + b"\n"


# Thunderbird asks https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml and
# https://autoconfig.<domain>/mail/config-v1.1.xml, both with ?emailaddress=<address>. The
# answer is the same for every address, so the query string is never read.
@bp.get("/.well-known/autoconfig/mail/config-v1.1.xml")
@bp.get("/mail/config-v1.1.xml")
@access("public")
def autoconfig() -> Response:
    return Response(autoconfig_xml(), mimetype="application/xml")

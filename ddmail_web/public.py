"""Public pages of the panel: help, about, terms, contact, pricing and the well-known files.

Everything here is readable without logging in and without JavaScript. Every value comes from
the deployment's one validated config (ddmail_common.config: sections [public] and [web]),
which create_app puts on the app; a page never reflects request input.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, abort, current_app, render_template, request

from ddmail_common.config import PublicSettings, WebSettings
from ddmail_common.errors import ApiError
from ddmail_common.mta_sts import policy_text
from ddmail_common.validators import operator_address
from ddmail_web.funds import price_text
from ddmail_web.sessions import access
from ddmail_web.state import web
from ddmail_web.transport import over_tls

bp = Blueprint("public", __name__)

# RFC 9116 section 2.5.5 recommends an Expires value less than a year in the future.
SECURITY_TXT_LIFETIME = timedelta(days=364)
PUBLIC = "ddmail_public"  # app.extensions key: (PublicSettings, WebSettings)


# --- config ----------------------------------------------------------------------------------


def configure(app: Flask, public: PublicSettings, web: WebSettings) -> None:
    """Give the app the settings every public value comes from (called by create_app)."""
    app.extensions[PUBLIC] = (public, web)


def _settings() -> tuple[PublicSettings, WebSettings]:
    settings: tuple[PublicSettings, WebSettings] = current_app.extensions[PUBLIC]
    return settings


def onion_hostname() -> str | None:
    return _settings()[0].onion_hostname


def _panel_url() -> str:
    return _settings()[1].panel_url.rstrip("/")


def mail_client_values() -> dict[str, object]:
    """What a mail program is set up with, for templates/_mail_settings.html: the help page and
    the mailbox pages show the same servers because both take them from here."""
    public = _settings()[0]
    return {
        "mail_hostname": public.mail_hostname,
        "onion_hostname": public.onion_hostname,
        "i2p_hostname": public.i2p_hostname,
        "imaps_port": public.imaps_port,
        "submission_port": public.submission_port,
        "submissions_port": public.submissions_port,
        "anon_imap_port": public.anon_imap_port,
        "anon_submission_port": public.anon_submission_port,
        # What Dovecot enforces: the same config value renders its quota rule.
        "mailbox_quota_bytes": public.mailbox_quota_mb * 1024 * 1024,
    }


def _page(template: str, **extra: object) -> str:
    public, web = _settings()
    domain = web.global_domain
    return render_template(
        template,
        domain=domain,
        **mail_client_values(),
        security_contacts=public.security_contacts,
        postmaster=operator_address("postmaster", domain),
        abuse=operator_address("abuse", domain),
        **extra,
    )


def _plain_text(body: str) -> Response:
    return Response(body, mimetype="text/plain")  # Flask adds "; charset=utf-8"


# --- pages -----------------------------------------------------------------------------------


def landing_page() -> str:
    """The front page: its claims follow the about page and the configured addresses."""
    return _page("landing.html")


@bp.get("/help")
@access("public")
def help_page() -> str:
    return _page("public/help.html", price=price_text(_settings()[1]))


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
    return _page("public/pricing.html", price=price_text(_settings()[1]))


# --- well-known files ------------------------------------------------------------------------


def security_txt(now: datetime) -> str:
    """The RFC 9116 security.txt body, valid from NOW (an aware datetime)."""
    expires = (now.astimezone(UTC) + SECURITY_TXT_LIFETIME).replace(microsecond=0)
    panel = _panel_url()
    lines = [f"Contact: {contact}" for contact in _settings()[0].security_contacts]
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


def _mta_sts_host_served(host: str) -> bool:
    """Whether the backend serves a policy for this `mta-sts.` host (a global domain's or a
    verified, not suspended customer domain's)."""
    try:
        answer = web().backend.call("GET", f"/v1/mta-sts/host?{urlencode({'name': host})}")
    except ApiError:
        # No answer is not "no policy": a sender that got a 404 could drop a cached policy.
        abort(503)
    return bool(answer["served"])


@bp.get("/.well-known/mta-sts.txt")
@access("public")
def mta_sts_file() -> Response:
    # The Host header decides (RFC 8461 section 3.3: https://mta-sts.<domain>/). A policy host
    # of a domain we do not serve gets the same 404 as any unknown path, so the answer tells no
    # more than DNS already does. Other names (the panel's own) get the service's policy.
    host = request.host.lower().partition(":")[0]
    if host.startswith("mta-sts.") and not _mta_sts_host_served(host):
        abort(404)
    return _plain_text(policy_text(_settings()[0]))


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


def autoconfig_xml(onion: bool = False) -> bytes:
    """Thunderbird autoconfig (clientConfig 1.1) for addresses on the global domain; ONION: the
    answer for the onion service (its own ports, no TLS: Tor encrypts end to end)."""
    public, web = _settings()
    domain = web.global_domain
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    ET.SubElement(provider, "domain").text = domain
    ET.SubElement(provider, "displayName").text = f"DDMail ({domain})"
    ET.SubElement(provider, "displayShortName").text = "DDMail"
    if onion and public.onion_hostname:
        host, panel = public.onion_hostname, f"http://{public.onion_hostname}"
        _server(provider, "incomingServer", "imap", host, public.anon_imap_port, "plain")
        _server(provider, "outgoingServer", "smtp", host, public.anon_submission_port, "plain")
    else:
        host, panel = public.mail_hostname, _panel_url()
        _server(provider, "incomingServer", "imap", host, public.imaps_port, "SSL")
        _server(provider, "outgoingServer", "smtp", host, public.submissions_port, "SSL")
        _server(provider, "outgoingServer", "smtp", host, public.submission_port, "STARTTLS")
    doc = ET.SubElement(provider, "documentation", url=f"{panel}/help")
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
    # Asked of the onion service (through Tor, for its name): the onion answer.
    onion = not over_tls() and request.host.lower() == onion_hostname()
    return Response(autoconfig_xml(onion), mimetype="application/xml")

"""Other providers on loopback, for the transport-security tests (issue 11): mail servers on
port 25 of their own loopback addresses, an MTA-STS policy host on port 443, and DNSSEC-signed
zones served by the session's NSD and trusted by the stack's Unbound (ddmail_stack.dns) —
the Internet a sending or receiving MTA meets, offline."""

from __future__ import annotations

import dataclasses
import http.server
import re
import ssl
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from ddmail_admin.dnssec import signed_zone
from ddmail_admin.dnszone import Record, tlsa_3_1_1
from ddmail_common.config import Config, ZoneSettings
from ddmail_stack.dns import add_trust_anchor
from ddmail_stack.layout import StackLayout
from ddmail_stack.tls import issue
from tests.authdns import AuthDns
from tests.stackrun import wait_until


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope.original_content or b"")
        return "250 OK"


class MailServer:
    """An SMTP server on ADDRESS:25, with STARTTLS when given a certificate."""

    def __init__(self, address: str, tls: tuple[Path, Path] | None) -> None:
        self.inbox = _Inbox()
        extra: dict[str, object] = {}
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            extra = {"tls_context": context, "require_starttls": False}
        self.controller = Controller(
            self.inbox, hostname=address, port=25, decode_data=False, **extra
        )
        self.controller.start()

    def received(self, marker: str) -> list[bytes]:
        return [m for m in self.inbox.messages if marker.encode() in m]

    def stop(self) -> None:
        self.controller.stop()


class PolicyHost:
    """HTTPS on ADDRESS:443 serving /.well-known/mta-sts.txt, one policy per Host name."""

    def __init__(self, address: str, cert: Path, key: Path, policies: Mapping[str, str]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host = (self.headers.get("Host") or "").split(":")[0].lower()
                body = policies.get(host)
                if self.path != "/.well-known/mta-sts.txt" or body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.server = http.server.ThreadingHTTPServer((address, 443), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def certificate(layout: StackLayout, directory: Path, *names: str) -> tuple[Path, Path]:
    """A certificate for NAMES from the stack's CA (the stand-in for the public CAs)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{names[0]}.pem", directory / f"{names[0]}.key"
    if not key.exists():
        issue(layout.ca_cert, layout.ca_key, cert, key, names, addresses=())
    return cert, key


def tlsa(cert: Path) -> str:
    return tlsa_3_1_1(cert.read_bytes())


def publish_signed(
    dns_server: AuthDns,
    layout: StackLayout,
    cfg: Config,
    zone: str,
    records: Iterable[Record],
    key_dir: Path,
) -> str:
    """Sign ZONE's RECORDS with `dns zone --sign`'s code, serve it, make the stack's Unbound
    trust its key; returns the zone file."""
    zone_cfg = dataclasses.replace(
        cfg, zone=ZoneSettings(nameservers=(f"ns1.{zone}",), dnssec_key_dir=key_dir)
    )
    text = signed_zone(zone_cfg, zone, records)
    found = re.search(r"^; DS record for the registrar: \S+ IN DS (.+)$", text, re.M)
    assert found, text[:400]
    dns_server.publish_zone_file(zone, text)
    add_trust_anchor(layout, zone, found.group(1))
    return text


def validated(layout: StackLayout, name: str, rtype: str) -> bool:
    """True when the stack's Unbound answers NAME/RTYPE with the AD bit (DNSSEC-secure)."""
    query = dns.message.make_query(name, rtype, want_dnssec=True)
    query.flags |= dns.flags.AD
    try:
        response = dns.query.udp(query, layout.resolver_address, port=53, timeout=2)
    except (OSError, dns.exception.DNSException):
        return False
    return bool(
        response.rcode() == dns.rcode.NOERROR and response.answer and response.flags & dns.flags.AD
    )


def wait_validated(layout: StackLayout, name: str, rtype: str) -> None:
    wait_until(lambda: validated(layout, name, rtype), 30, f"{name} {rtype} validated")

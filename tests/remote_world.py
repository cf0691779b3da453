"""Other providers on loopback, for the transport-security tests (issue 11): mail servers on
port 25 of their own loopback addresses, an MTA-STS policy host on port 443, and DNSSEC-signed
zones served by the session's NSD and trusted by the stack's Unbound (ddmail_stack.dns) —
the Internet a sending or receiving MTA meets, offline."""

from __future__ import annotations

import dataclasses
import http.server
import os
import re
import shutil
import signal
import ssl
import subprocess
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
from ddmail_stack.dns import add_trust_anchor, with_resolver
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


SENDER_MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class SendingPostfix:
    """Another provider's Postfix: no listener, outbound DANE as Postfix documents it
    (smtp_tls_security_level = dane, smtp_dns_support_level = dnssec), resolving through the
    stack's Unbound (its mount namespace's resolv.conf). ROUTES: domain -> "host:port"
    nexthop (MX lookup, a non-default port: the stack's MX listens on a high one)."""

    def __init__(self, directory: Path, layout: StackLayout, routes: Mapping[str, str]) -> None:
        # Postfix's own user must reach its data directory: DIRECTORY and every parent must be
        # traversable (pytest's temporary directories are not).
        self.dir = directory
        self.conf = directory / "etc"
        self.conf.mkdir(parents=True, exist_ok=True)
        (directory / "data").mkdir(exist_ok=True)
        (directory / "spool").mkdir(exist_ok=True)
        shutil.chown(directory / "data", "postfix")
        transport = ", ".join(f"{domain}=smtp:{nexthop}" for domain, nexthop in routes.items())
        probe = next(iter(routes))
        (self.conf / "main.cf").write_text(
            f"""compatibility_level = 3.6
queue_directory = {directory / "spool"}
data_directory = {directory / "data"}
myhostname = mx.sender.example
mydestination =
# Not 127.0.0.1, where the stack listens: Postfix would see its own address ("mail loops
# back to myself"). Nothing listens: master.cf has no smtpd.
inet_interfaces = [::1]
inet_protocols = all
maillog_file = /dev/stdout
smtp_tls_security_level = dane
smtp_dns_support_level = dnssec
smtp_tls_loglevel = 1
# The default probe (the root's NS) cannot be answered offline.
dnssec_probe = ns:{probe}
transport_maps = inline:{{{transport}}}
"""
        )
        (self.conf / "master.cf").write_text(SENDER_MASTER_CF)
        self.log = directory / "postfix.log"
        self.proc = subprocess.Popen(
            with_resolver(layout, ["postfix", "-c", str(self.conf), "start-fg"]),
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        pickup = directory / "spool" / "public" / "pickup"
        wait_until(lambda: pickup.exists() or self.proc.poll() is not None, 30, "sender up")
        assert self.proc.poll() is None, self.log_text()

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        subprocess.run(
            ["sendmail", "-C", str(self.conf), "-f", sender, recipient],
            input=message,
            check=True,
            timeout=30,
        )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def flush(self) -> None:
        subprocess.run(["postqueue", "-c", str(self.conf), "-f"], check=True)

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True, check=False)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

"""`ddmail admin tls rollover prepare|switch|finish|status`: replacing the key every TLS port
serves without a moment in which DANE fails (DN 42; RFC 7671 §8.1, "current + next").

prepare  makes the next key and certificate ([tls] issue_command); `dns zone` now publishes
         its TLSA records beside the current ones.
switch   only once the validating resolver ([tls] resolver) serves every next TLSA record,
         DNSSEC-authenticated, and dns_ttl + [tls] switch_margin_seconds have passed since
         prepare (no resolver still caches the records without it): the next pair becomes the
         served one, the replaced pair is kept as "previous", the daemons reload
         ([tls] reload_command). A failed reload puts the old pair back.
finish   drops the previous pair: `dns zone` stops publishing its records.

Routine certificate renewals keep the key (certbot --reuse-key), so they need none of this."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ddmail_admin.dnszone import Record, tls_ports, tlsa_3_1_1, tlsa_name
from ddmail_admin.tls_files import TlsFiles
from ddmail_common.config import Config
from ddmail_common.utc import utc_text


class RolloverError(Exception):
    """A step refused or failed; nothing was changed (or it was put back)."""


@dataclass(frozen=True)
class State:
    prepared_at: int
    switched_at: int | None = None

    @classmethod
    def load(cls, files: TlsFiles) -> State | None:
        if not files.state.exists():
            return None
        data = json.loads(files.state.read_text())
        return cls(int(data["prepared_at"]), data.get("switched_at"))

    def save(self, files: TlsFiles) -> None:
        tmp = files.state.with_name(files.state.name + ".tmp")
        tmp.write_text(
            json.dumps({"prepared_at": self.prepared_at, "switched_at": self.switched_at})
        )
        tmp.replace(files.state)


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _dns_names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {name.lower() for name in san.get_values_for_type(x509.DNSName)}


def _check_pair(files: TlsFiles) -> None:
    """The next certificate is for the next key, valid now, and names every name the served
    one does (clients that check names must not notice the switch)."""
    cert = x509.load_pem_x509_certificate(files.next_certificate.read_bytes())
    key = serialization.load_pem_private_key(files.next_key.read_bytes(), password=None)
    if _spki(cert) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise RolloverError("the issued certificate is not for the issued key")
    if (
        not cert.not_valid_before_utc.timestamp()
        <= time.time()
        < cert.not_valid_after_utc.timestamp()
    ):
        raise RolloverError("the issued certificate is not valid now")
    current = x509.load_pem_x509_certificate(files.certificate.read_bytes())
    missing = _dns_names(current) - _dns_names(cert)
    if missing:
        raise RolloverError(f"the issued certificate lacks the names {', '.join(sorted(missing))}")
    if _spki(cert) == _spki(current):
        raise RolloverError("the issued certificate has the current key: no rollover needed")


def _records(cfg: Config, certificate: Path) -> list[Record]:
    data = tlsa_3_1_1(certificate.read_bytes())
    return [Record(tlsa_name(host, port), "TLSA", data) for host, port in tls_ports(cfg)]


def prepare(cfg: Config, now: int | None = None) -> list[Record]:
    """Make the next key and certificate; return the TLSA records to publish for it."""
    files = TlsFiles.of(cfg.tls)
    if State.load(files) is not None:
        raise RolloverError("a rollover is under way: switch or finish it first")
    if not cfg.tls.issue_command:
        raise RolloverError("tls.issue_command: name the program that issues the next certificate")
    for leftover in (files.next_certificate, files.next_key):
        leftover.unlink(missing_ok=True)  # of an issue that failed half-way
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "DDMAIL_TLS_NEXT_KEY": str(files.next_key),
        "DDMAIL_TLS_NEXT_CERTIFICATE": str(files.next_certificate),
    }
    try:
        issued = subprocess.run(
            list(cfg.tls.issue_command), env=env, capture_output=True, text=True, timeout=600
        )
        if issued.returncode != 0:
            raise RolloverError(f"tls.issue_command failed: {issued.stderr.strip()[-500:]}")
        if not (files.next_certificate.exists() and files.next_key.exists()):
            raise RolloverError("tls.issue_command made no next key and certificate")
        _check_pair(files)
    except BaseException:
        for partial in (files.next_certificate, files.next_key):
            partial.unlink(missing_ok=True)
        raise
    State(now if now is not None else int(time.time())).save(files)
    return _records(cfg, files.next_certificate)


def switch_after(cfg: Config, state: State) -> int:
    return state.prepared_at + cfg.dns_ttl + cfg.tls.switch_margin_seconds


def unserved(cfg: Config, records: list[Record]) -> list[str]:
    """The names of RECORDS the resolver does not serve with DNSSEC authentication."""
    host, port = cfg.tls.resolver
    missing = []
    for record in records:
        query = dns.message.make_query(record.name, "TLSA", want_dnssec=True)
        query.flags |= dns.flags.AD
        try:
            answer = dns.query.udp(query, host, port=port, timeout=5)
        except (OSError, dns.exception.DNSException):
            return [f"no answer from the resolver {host}:{port}"]
        served = {
            rdata.to_text()
            for rrset in answer.answer
            if rrset.rdtype == dns.rdatatype.TLSA
            for rdata in rrset
        }
        if record.data not in served:
            missing.append(record.name)
        elif not answer.flags & dns.flags.AD:
            missing.append(f"{record.name} (not DNSSEC-authenticated)")
    return missing


def _reload(cfg: Config) -> None:
    if not cfg.tls.reload_command:
        raise RolloverError("tls.reload_command: name the program that reloads the TLS daemons")
    done = subprocess.run(list(cfg.tls.reload_command), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RolloverError(f"tls.reload_command failed: {done.stderr.strip()[-500:]}")


def switch(cfg: Config, now: int | None = None, check_dns: bool = True) -> None:
    files = TlsFiles.of(cfg.tls)
    state = State.load(files)
    if state is None or state.switched_at is not None:
        raise RolloverError("nothing to switch to: run prepare first")
    now = now if now is not None else int(time.time())
    # Without DNSSEC no sender uses the TLSA records: neither their caching nor their
    # presence matters then.
    if check_dns and now < switch_after(cfg, state):
        raise RolloverError(
            f"too early: resolvers may still cache the records without the next key until "
            f"{utc_text(switch_after(cfg, state))}"
        )
    if check_dns:
        missing = unserved(cfg, _records(cfg, files.next_certificate))
        if missing:
            raise RolloverError("DNS does not serve the next key yet: " + ", ".join(missing))
    _check_pair(files)
    # The served pair stays reachable as "previous" (hard links: nothing copied, nothing lost)
    # before the next pair takes its place.
    os.link(files.certificate, files.previous_certificate)
    os.link(files.key, files.previous_key)
    os.replace(files.next_key, files.key)
    os.replace(files.next_certificate, files.certificate)
    try:
        _reload(cfg)
    except RolloverError:
        # Back to where prepare left it: the new pair as next, the old one served.
        os.link(files.key, files.next_key)
        os.link(files.certificate, files.next_certificate)
        os.replace(files.previous_key, files.key)
        os.replace(files.previous_certificate, files.certificate)
        _reload(cfg)
        raise
    State(state.prepared_at, now).save(files)


def finish(cfg: Config) -> list[Record]:
    """Forget the previous pair; return the TLSA records that may now leave DNS."""
    files = TlsFiles.of(cfg.tls)
    state = State.load(files)
    if state is None or state.switched_at is None:
        raise RolloverError("nothing to finish: the switch has not happened")
    gone = _records(cfg, files.previous_certificate)
    files.previous_key.unlink()
    files.previous_certificate.unlink()
    files.state.unlink()
    return gone


def status(cfg: Config) -> str:
    files = TlsFiles.of(cfg.tls)
    state = State.load(files)
    if state is None:
        return "no rollover under way"
    if state.switched_at is None:
        return (
            f"prepared {utc_text(state.prepared_at)}; switch possible from "
            f"{utc_text(switch_after(cfg, state))} once DNS serves the next key"
        )
    return f"switched {utc_text(state.switched_at)}; finish to drop the previous key"

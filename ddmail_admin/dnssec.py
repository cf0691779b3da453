"""`ddmail admin dns zone --sign`: each global domain's records as a complete DNSSEC-signed zone
(SOA, NS, DNSKEY, RRSIG, NSEC) for operators who serve their zone themselves (issue 11).

The keys are ECDSA P-256 (algorithm 13): a key-signing key, whose DS record goes to the
registrar, and a zone-signing key; made once per domain in `[zone] dnssec_key_dir` (root's,
0600) and reused. Signatures are valid for SIGNATURE_DAYS from an hour ago: re-run the command
and publish its output well before they expire, or let the ddmail-zone-sign timer write
the zone files daily (`--write`, `[zone] signed_dir`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dns.dnssec
import dns.dnssectypes
import dns.name
import dns.rdtypes.ANY.DNSKEY
import dns.zone
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ddmail_admin.dnszone import DkimKey, Record, fqdn, global_names, header, sections
from ddmail_common.config import Config, ConfigError
from ddmail_common.files import create_new

ALGORITHM = dns.dnssectypes.Algorithm.ECDSAP256SHA256
SIGNATURE_DAYS = 14
KSK_FLAGS = 257  # zone key + secure entry point
ZSK_FLAGS = 256

Keys = list[tuple[ec.EllipticCurvePrivateKey, dns.rdtypes.ANY.DNSKEY.DNSKEY]]


def _load_or_make(path: Path) -> ec.EllipticCurvePrivateKey:
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        create_new(path, pem, 0o600)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path}: not an ECDSA key")
    return loaded


def zone_keys(key_dir: Path, domain: str) -> Keys:
    """The domain's KSK and ZSK, made on first use."""
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys: Keys = []
    for role, flags in (("ksk", KSK_FLAGS), ("zsk", ZSK_FLAGS)):
        private = _load_or_make(key_dir / f"{domain}.{role}.pem")
        keys.append((private, dns.dnssec.make_dnskey(private.public_key(), ALGORITHM, flags)))
    return keys


def in_zone(name: str, domain: str) -> bool:
    return dns.name.from_text(name).is_subdomain(dns.name.from_text(fqdn(domain)))


def signed_zone(
    cfg: Config, domain: str, records: Iterable[Record], now: datetime | None = None
) -> str:
    """DOMAIN's zone: SOA and NS from `[zone]`, RECORDS, signed; the DS record on top."""
    if not cfg.zone.nameservers:
        raise ConfigError("zone.nameservers: list this zone's name servers to sign it")
    now = now or datetime.now(UTC)
    apex = fqdn(domain)
    lines = [
        f"{apex} {cfg.dns_ttl} IN SOA {fqdn(cfg.zone.nameservers[0])} hostmaster.{apex} "
        f"{int(now.timestamp())} 3600 600 1209600 {cfg.dns_ttl}",
        *(f"{apex} {cfg.dns_ttl} IN NS {fqdn(ns)}" for ns in cfg.zone.nameservers),
        *(f"{r.name} {cfg.dns_ttl} IN {r.rtype} {r.data}" for r in records),
    ]
    zone = dns.zone.from_text("\n".join(lines) + "\n", origin=apex, relativize=False)
    keys = zone_keys(cfg.zone.dnssec_key_dir, domain)
    dns.dnssec.sign_zone(
        zone,
        keys=keys,  # type: ignore[arg-type]
        dnskey_ttl=cfg.dns_ttl,
        inception=now - timedelta(hours=1),
        expiration=now + timedelta(days=SIGNATURE_DAYS),
    )
    ds = dns.dnssec.make_ds(apex, keys[0][1], "SHA256")
    until = (now + timedelta(days=SIGNATURE_DAYS)).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        f"; --- {domain}: signed zone, signatures valid until {until}: sign again before then",
        f"; DS record for the registrar: {apex} IN DS {ds}",
    ]
    return "\n".join(head) + "\n" + zone.to_text(relativize=False)


def signed_zones(
    cfg: Config, domains: Iterable[str], dkim_keys: Sequence[DkimKey] = ()
) -> tuple[list[tuple[str, str]], list[Record]]:
    """(domain, signed zone) for each global domain, holding every record under it; and the
    records under none of them (a mail host in another domain), to publish in their own zone."""
    names = global_names(domains)
    every = [record for _, found in sections(cfg, names, dkim_keys) for record in found]
    # The most specific zone wins (a global domain may be a subdomain of another).
    zone_of = {
        id(record): max(
            (name for name in names if in_zone(record.name, name)), key=len, default=None
        )
        for record in every
    }
    zones = [
        (name, signed_zone(cfg, name, [r for r in every if zone_of[id(r)] == name]))
        for name in names
    ]
    return zones, [r for r in every if zone_of[id(r)] is None]


def render_signed(cfg: Config, domains: Iterable[str], dkim_keys: Sequence[DkimKey] = ()) -> str:
    """`dns zone --sign`: one signed zone per global domain; records under none of them follow
    as comments, so the output stays a valid zone file for each zone it holds."""
    zones, rest = signed_zones(cfg, domains, dkim_keys)
    parts = [*header(cfg, global_names(domains)), *(text for _, text in zones)]
    if rest:
        parts.append("; --- in none of these zones: publish them in their own zone")
        parts.extend(f"; {r.line()}" for r in rest)
    return "\n".join(parts) + "\n"


def write_signed(
    cfg: Config, domains: Iterable[str], dkim_keys: Sequence[DkimKey] = ()
) -> list[Path]:
    """`dns zone --sign --write`: each global domain's signed zone as `[zone] signed_dir`/
    <domain>.zone, replaced atomically (a name server never loads half a file); the
    ddmail-zone-sign timer runs it daily, well within the signatures' 14 days."""
    if cfg.zone.signed_dir is None:
        raise ConfigError("zone.signed_dir: name the directory the signed zones go to")
    cfg.zone.signed_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    written = []
    for domain, text in signed_zones(cfg, domains, dkim_keys)[0]:
        path = cfg.zone.signed_dir / f"{domain}.zone"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.unlink(missing_ok=True)
        create_new(tmp, text.encode(), 0o644)
        tmp.replace(path)
        written.append(path)
    return written

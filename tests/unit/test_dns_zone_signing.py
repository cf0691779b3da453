"""`ddmail admin dns zone --sign`: the signed zone passes two independent validators
(ldns-verify-zone and BIND's dnssec-verify, Debian packages ldnsutils and bind9-utils), a
flipped byte in a record is caught by both, the keys persist, and the DS matches the KSK."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import dns.dnssec
import dns.zone
import pytest

from ddmail_admin.dnssec import render_signed, write_signed
from ddmail_common.config import Config, ConfigError, ZoneSettings
from tests.unit.test_dns_zone import config, dkim_key

DOMAIN = "example.org"


def signing_config(tmp_path: Path) -> Config:
    return dataclasses.replace(
        config(),
        zone=ZoneSettings(nameservers=("ns1.example.org",), dnssec_key_dir=tmp_path / "keys"),
    )


def signed_text(tmp_path: Path) -> str:
    keys = [
        dkim_key(DOMAIN, "ddm1", "active", "ddm1._domainkey.example.org"),
        dkim_key("customer.test", "ddm1", "active", "ddm1.customer.test.dkim.example.org"),
    ]
    return render_signed(signing_config(tmp_path), [DOMAIN], keys)


def verify(tmp_path: Path, text: str) -> tuple[int, int]:
    path = tmp_path / "zone.signed"
    path.write_text(text)  # as printed: a name server loads it, comments and all
    ldns = subprocess.run(["ldns-verify-zone", str(path)], capture_output=True, timeout=60)
    bind = subprocess.run(
        ["dnssec-verify", "-o", DOMAIN, str(path)], capture_output=True, timeout=60
    )
    return ldns.returncode, bind.returncode


def test_the_signed_zone_passes_ldns_and_bind(tmp_path: Path) -> None:
    text = signed_text(tmp_path)
    assert "RRSIG" in text and "NSEC" in text and "DNSKEY" in text
    assert "ddm1.customer.test.dkim.example.org." in text  # customer keys are in the zone
    assert verify(tmp_path, text) == (0, 0)


def test_a_flipped_byte_in_any_record_is_caught_by_both(tmp_path: Path) -> None:
    text = signed_text(tmp_path)
    for needle, changed in (
        ('"v=spf1 mx -all"', '"v=spf1 mx ~all"'),
        ("10 mx.example.net.", "10 mx.example.nes."),
        ("v=DKIM1; k=rsa; h=sha256; p=DDM1", "v=DKIM1; k=rsa; h=sha256; p=DDM2"),
    ):
        assert needle in text, needle
        ldns, bind = verify(tmp_path, text.replace(needle, changed, 1))
        assert ldns != 0 and bind != 0, needle


def test_the_keys_persist_and_the_ds_names_the_ksk(tmp_path: Path) -> None:
    first, second = signed_text(tmp_path), signed_text(tmp_path)
    ds_line = next(line for line in first.splitlines() if "IN DS" in line)
    assert ds_line == next(line for line in second.splitlines() if "IN DS" in line)
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [
        "example.org.ksk.pem",
        "example.org.zsk.pem",
    ]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in (tmp_path / "keys").iterdir())
    zone = dns.zone.from_text(first, origin="example.org.", relativize=False)
    dnskeys = zone.get_rdataset("example.org.", "DNSKEY")
    ksk = next(k for k in dnskeys if k.flags == 257)
    ds = ds_line.split("IN DS ", 1)[1]
    assert str(dns.dnssec.make_ds("example.org.", ksk, "SHA256")) == ds


def test_signing_needs_the_zones_name_servers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"zone\.nameservers"):
        render_signed(config(), [DOMAIN])


def test_write_puts_one_verified_zone_file_per_domain_and_replaces_it(tmp_path: Path) -> None:
    """What the daily ddmail-zone-sign timer leaves for the name server: <domain>.zone,
    world-readable, passing both validators; the next run replaces it whole."""
    out = tmp_path / "zones"
    out.mkdir()
    cfg = signing_config(tmp_path)
    cfg = dataclasses.replace(cfg, zone=dataclasses.replace(cfg.zone, signed_dir=out))
    (first,) = write_signed(cfg, [DOMAIN, "example.org."])
    assert first == out / "example.org.zone"
    assert first.stat().st_mode & 0o777 == 0o644
    assert verify(tmp_path, first.read_text()) == (0, 0)
    (second,) = write_signed(cfg, [DOMAIN])
    assert second == first and sorted(p.name for p in out.iterdir()) == ["example.org.zone"]
    without = dataclasses.replace(cfg, zone=dataclasses.replace(cfg.zone, signed_dir=None))
    with pytest.raises(ConfigError, match="signed_dir"):
        write_signed(without, [DOMAIN])

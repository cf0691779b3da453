"""`ddmail admin dns zone` output read as a name server would load it, for tests that check
records against real parsers (dnspython here; dkimpy, ldns and BIND elsewhere)."""

from __future__ import annotations

import dns.rdatatype
import dns.zone


def parsed(text: str) -> dns.zone.Zone:
    """Under the root, every name absolute (the output names records of several domains)."""
    head = ". 3600 IN SOA ns. host. 1 7200 3600 1209600 3600\n"
    return dns.zone.from_text(head + text, origin=".", relativize=False, check_origin=False)


def answers(zone: dns.zone.Zone, name: str, rtype: str) -> list[str]:
    rdataset = zone.get_rdataset(name, dns.rdatatype.from_text(rtype))
    return sorted(r.to_text() for r in rdataset) if rdataset else []


def txt_bytes(zone: dns.zone.Zone, name: str) -> bytes | None:
    """The TXT record at NAME, its strings joined (what a DKIM verifier gets from DNS)."""
    rdataset = zone.get_rdataset(name, dns.rdatatype.TXT)
    if not rdataset:
        return None
    return b"".join(next(iter(rdataset)).strings)

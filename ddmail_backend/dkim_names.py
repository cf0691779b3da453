"""Where DKIM keys live in DNS (DN 38): two selectors per domain that take turns; a global
domain publishes its keys itself, a customer domain points two CNAMEs into the provider's zone
once, so rotating its key never needs the customer's DNS again."""

from __future__ import annotations

SELECTORS = ("ddm1", "ddm2")


def txt_value(public_key: str) -> str:
    return f"v=DKIM1; k=rsa; h=sha256; p={public_key}"


def record_name(domain: str, selector: str, global_domain: str, is_global: bool) -> str:
    """Where a key's TXT record lives: a global domain's own zone, or for a customer domain the
    provider's zone (the customer's CNAME points there)."""
    if is_global:
        return f"{selector}._domainkey.{domain}"
    return f"{selector}.{domain}.dkim.{global_domain}"


def customer_cname(domain: str, selector: str, global_domain: str) -> tuple[str, str]:
    """The CNAME a customer domain publishes for SELECTOR: (name, target)."""
    return f"{selector}._domainkey.{domain}", record_name(domain, selector, global_domain, False)

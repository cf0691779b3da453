"""The rules every new address (mailbox or alias) must pass before it is created."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from ddmail_backend.models import GLOBAL, Alias, Domain, DomainClaim, Mailbox, Tombstone
from ddmail_common.errors import ApiError, conflict, rule_violated
from ddmail_common.validators import InvalidInput, is_reserved, normalize_address


def parse_address(text: str) -> str:
    try:
        return normalize_address(text)
    except InvalidInput as exc:
        raise ApiError(400, "invalid_address", str(exc)) from None


def check_new_address(
    s: Session, account: str, address: str, reserved_extra: Iterable[str]
) -> Domain:
    """Return the address's domain if ACCOUNT may create ADDRESS now; otherwise raise."""
    local, _, domain_name = address.rpartition("@")
    domain = s.execute(select(Domain).where(Domain.name == domain_name)).scalar()
    if domain is None or (domain.kind != GLOBAL and domain.account != account):
        claimed = s.execute(
            select(DomainClaim.id).where(
                DomainClaim.name == domain_name, DomainClaim.account == account
            )
        ).first()
        if claimed:
            raise rule_violated(
                "Verify the domain's DNS record before adding addresses to it.", "domain_unverified"
            )
        raise rule_violated("Addresses cannot be created on this domain.", "unknown_domain")
    if domain.kind == GLOBAL:
        if not domain.enabled:
            raise rule_violated("Addresses cannot be created on this domain.", "unknown_domain")
        if is_reserved(local, reserved_extra):
            raise rule_violated(
                f"{address} is reserved: the service uses it (postmaster, abuse, report and "
                "system addresses). Choose another name.",
                "reserved_address",
            )
    elif not domain.enabled:
        raise rule_violated(
            "This domain is suspended: its DNS record no longer proves ownership. Restore the "
            "record, then verify the domain again.",
            "domain_suspended",
        )
    elif not domain.verified:
        raise rule_violated(
            "Verify the domain's DNS record before adding addresses to it.", "domain_unverified"
        )
    # A removed address stays removed: a new owner must never receive the old owner's mail.
    if s.get(Tombstone, address) is not None:
        raise conflict("This address was used before and cannot be created again.", "address_taken")
    taken = (
        s.execute(select(Mailbox.id).where(Mailbox.address == address)).first()
        or s.execute(select(Alias.id).where(Alias.address == address)).first()
    )
    if taken:
        raise conflict("This address is already taken.", "address_taken")
    return domain

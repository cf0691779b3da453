"""Aliases: an address of the account that delivers to one or more of its own mailboxes."""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import func, select

from ddmail_backend.addresses import check_new_address, parse_address
from ddmail_backend.models import ACTIVE, Alias, AliasDestination, Mailbox, Tombstone
from ddmail_common.db import Database
from ddmail_common.errors import bad_request, not_found, rule_violated

MAX_DESTINATIONS = 20


class Aliases:
    def __init__(self, db: Database, reserved_extra: Iterable[str] = ()) -> None:
        self.db = db
        self.reserved_extra = frozenset(reserved_extra)

    def add(self, account: str, address_text: str, destinations: list[str]) -> dict[str, object]:
        address = parse_address(address_text)
        if not destinations or len(destinations) > MAX_DESTINATIONS:
            raise bad_request(f"An alias needs 1 to {MAX_DESTINATIONS} destinations.")
        targets = sorted({parse_address(d) for d in destinations})
        with self.db.session() as s:
            domain = check_new_address(s, account, address, self.reserved_extra)
            own = set(
                s.execute(
                    select(Mailbox.address).where(
                        Mailbox.account == account,
                        Mailbox.state == ACTIVE,
                        Mailbox.address.in_(targets),
                    )
                ).scalars()
            )
            missing = [t for t in targets if t not in own]
            if missing:
                raise rule_violated(
                    "Destinations must be mailboxes of this account: " + ", ".join(missing),
                    "invalid_destination",
                )
            s.add(
                Alias(
                    account=account,
                    address=address,
                    domain_id=domain.id,
                    created_at=int(time.time()),
                    destinations=[AliasDestination(destination=t) for t in targets],
                )
            )
        return {"address": address, "destinations": targets}

    def list(self, account: str) -> list[dict[str, object]]:
        with self.db.session() as s:
            rows = s.execute(
                select(Alias).where(Alias.account == account).order_by(Alias.address)
            ).scalars()
            return [
                {"address": a.address, "destinations": [d.destination for d in a.destinations]}
                for a in rows
            ]

    def count(self, account: str) -> int:
        with self.db.session() as s:
            query = select(func.count()).select_from(Alias).where(Alias.account == account)
            return int(s.execute(query).scalar_one())

    def remove(self, account: str, address_text: str) -> None:
        address = parse_address(address_text)
        with self.db.session() as s:
            alias = s.execute(
                select(Alias).where(Alias.address == address, Alias.account == account)
            ).scalar()
            if alias is None:
                raise not_found("No such alias in this account.")
            s.delete(alias)
            s.add(Tombstone(address=address, removed_at=int(time.time())))

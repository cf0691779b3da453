"""Where mail to the operator addresses (postmaster@, abuse@, report addresses) goes: the rows
Postfix reads through the view mail_operator_aliases, rewritten from the config at start."""

from __future__ import annotations

from sqlalchemy import delete

from ddmail_backend.models import OperatorRoute
from ddmail_common.db import Database
from ddmail_common.validators import EVERY_DOMAIN_OPERATOR_LOCAL_PARTS, OPERATOR_LOCAL_PARTS


def sync_operator_routes(db: Database, destination: str) -> None:
    """Route every operator address to DESTINATION, in one transaction (a lookup meanwhile sees
    the old rows or the new ones, never none)."""
    with db.session() as s:
        s.execute(delete(OperatorRoute))
        s.add_all(
            OperatorRoute(
                local_part=local,
                destination=destination,
                every_domain=local in EVERY_DOMAIN_OPERATOR_LOCAL_PARTS,
            )
            for local in OPERATOR_LOCAL_PARTS
        )

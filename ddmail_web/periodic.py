"""The panel's periodic work: billing, and audit entries for mail held back by the OpenPGP
stage and for domains the backend suspended or restored (neither can write the panel's audit
trail itself). Run by `ddmail admin billing run`
or a timer; the local stack runs it every minute."""

from __future__ import annotations

import time

from sqlalchemy import delete, select

from ddmail_common.client import ServiceClient
from ddmail_common.config import WebSettings
from ddmail_common.db import Database
from ddmail_web import audit, funds, sessions, throttle
from ddmail_web.account_data import delete_everything
from ddmail_web.audit import AuditEntry
from ddmail_web.models import PendingKeyfile

HELD = "openpgp_delivery_held"


def record_openpgp_failures(db: Database, backend: ServiceClient) -> int:
    """One audit entry per mailbox and failure episode; returns how many were added."""
    added = 0
    for failure in backend.call("GET", "/v1/openpgp/failures")["failures"]:
        obj = f"{failure['address']} since {failure['since']}"
        with db.session() as s:
            known = s.execute(
                select(AuditEntry.id).where(
                    AuditEntry.account == failure["account"],
                    AuditEntry.action == HELD,
                    AuditEntry.object == obj,
                )
            ).first()
            if known is None:
                audit.append(s, failure["account"], "system", HELD, obj)
                added += 1
    return added


def record_domain_events(db: Database, backend: ServiceClient) -> int:
    """One audit entry per suspension, restoration or lost claim of an account's domain (the
    backend re-verifies domains but cannot write the panel's audit trail)."""
    added = 0
    for event in backend.call("GET", "/v1/domains/events")["events"]:
        obj = f"{event['name']} at {event['at']}"
        with db.session() as s:
            known = s.execute(
                select(AuditEntry.id).where(
                    AuditEntry.account == event["account"],
                    AuditEntry.action == event["action"],
                    AuditEntry.object == obj,
                )
            ).first()
            if known is None:
                audit.append(s, event["account"], "system", event["action"], obj)
                added += 1
    return added


def purge_expired(db: Database, settings: WebSettings) -> int:
    """Sessions, rate counters and undownloaded key files that can no longer do anything."""
    now = int(time.time())
    with db.session() as s:
        removed = sessions.purge_expired(s, settings, now) + throttle.purge_stale(s, now)
        result = s.execute(delete(PendingKeyfile).where(PendingKeyfile.expires_at < now))
        return removed + int(result.rowcount or 0)  # type: ignore[attr-defined]


def run(db: Database, backend: ServiceClient, settings: WebSettings) -> dict[str, int]:
    billing = funds.Billing(db, backend, settings)
    counts = billing.run(lambda account: delete_everything(db, backend, account, "system"))
    counts["openpgp_held"] = record_openpgp_failures(db, backend)
    counts["domain_events"] = record_domain_events(db, backend)
    counts["expired"] = purge_expired(db, settings)
    return counts

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


def _record_once(db: Database, account: str, action: str, obj: str) -> bool:
    """A system audit entry, unless the account's trail already has it (the backend reports
    the same event again on later runs). True when it was added."""
    with db.session() as s:
        known = s.execute(
            select(AuditEntry.id).where(
                AuditEntry.account == account,
                AuditEntry.action == action,
                AuditEntry.object == obj,
            )
        ).first()
        if known is not None:
            return False
        audit.append(s, account, "system", action, obj)
        return True


def record_openpgp_failures(db: Database, backend: ServiceClient) -> int:
    """One audit entry per mailbox and failure episode; returns how many were added."""
    return sum(
        _record_once(db, f["account"], HELD, f"{f['address']} since {f['since']}")
        for f in backend.call("GET", "/v1/openpgp/failures")["failures"]
    )


def record_domain_events(db: Database, backend: ServiceClient) -> int:
    """One audit entry per suspension, restoration or lost claim of an account's domain (the
    backend re-verifies domains but cannot write the panel's audit trail)."""
    return sum(
        _record_once(db, e["account"], e["action"], f"{e['name']} at {e['at']}")
        for e in backend.call("GET", "/v1/domains/events")["events"]
    )


def purge_expired(db: Database, settings: WebSettings) -> int:
    """Sessions, rate counters and undownloaded key files that can no longer do anything."""
    now = int(time.time())
    with db.session() as s:
        removed = sessions.purge_expired(s, settings, now) + throttle.purge_stale(s, now)
        result = s.execute(delete(PendingKeyfile).where(PendingKeyfile.expires_at < now))
        return removed + int(result.rowcount or 0)  # type: ignore[attr-defined]


def run(db: Database, backend: ServiceClient, settings: WebSettings) -> dict[str, int]:
    billing = funds.Billing(db, backend, settings)
    counts = billing.run(
        lambda account, trace: delete_everything(db, backend, account, "system", trace)
    )
    counts["openpgp_held"] = record_openpgp_failures(db, backend)
    counts["domain_events"] = record_domain_events(db, backend)
    counts["expired"] = purge_expired(db, settings)
    return counts

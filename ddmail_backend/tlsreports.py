"""SMTP TLS reports (RFC 8460) for the domains we host: stored once per report, listed for the
operator, summarised per customer domain for its owner."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError

from ddmail_backend.models import GLOBAL, Domain, TlsReport
from ddmail_common.db import Database
from ddmail_common.tlsrpt import Report

log = logging.getLogger(__name__)
# Kept this long after arrival, enough to see a trend and a fix take effect, then dropped:
# nothing is kept longer than it serves.
RETENTION_SECONDS = 90 * 86400
# The panel's summary covers the reports received this recently.
SUMMARY_SECONDS = 30 * 86400


class TlsReports:
    def __init__(self, db: Database) -> None:
        self.db = db

    def store(self, report: Report, now: int | None = None) -> dict[str, Any]:
        """Keep the policies of REPORT that name a global domain or a verified customer domain;
        a report id seen before from the same organisation is not stored again."""
        now = int(time.time()) if now is None else now
        try:
            return self._store(report, now)
        except IntegrityError:
            # The same report arrived twice at once (Postfix retried a delivery whose answer it
            # never saw): the other copy is stored, this transaction was rolled back.
            return {"stored": 0, "ignored": 0, "duplicate": True}

    def _store(self, report: Report, now: int) -> dict[str, Any]:
        names = sorted({p.domain for p in report.policies})
        with self.db.session() as s:
            known = set(
                s.scalars(
                    select(Domain.name).where(
                        Domain.name.in_(names), or_(Domain.kind == GLOBAL, Domain.verified)
                    )
                )
            )
            kept = [p for p in report.policies if p.domain in known]
            answer = {"stored": 0, "ignored": len(report.policies) - len(kept), "duplicate": False}
            if not kept:
                log.warning("TLS-RPT report ignored: it names no domain hosted here")
                return answer
            seen = s.scalar(
                select(TlsReport.id).where(
                    TlsReport.organization == report.organization,
                    TlsReport.report_id == report.report_id,
                )
            )
            if seen is not None:
                return {**answer, "duplicate": True}
            s.add_all(
                TlsReport(
                    organization=report.organization,
                    report_id=report.report_id,
                    policy_domain=p.domain,
                    policy_type=p.type,
                    start_at=report.start,
                    end_at=report.end,
                    successful=p.successful,
                    failed=p.failed,
                    failures=json.dumps(
                        [[f.result_type, f.mx_host, f.sessions] for f in p.failures]
                    ),
                    received_at=now,
                )
                for p in kept
            )
            s.execute(delete(TlsReport).where(TlsReport.received_at < now - RETENTION_SECONDS))
        return {**answer, "stored": len(kept)}

    def list(self) -> list[dict[str, Any]]:
        """Every stored report policy, newest period first (the operator's view)."""
        with self.db.session() as s:
            rows = s.scalars(
                select(TlsReport).order_by(
                    TlsReport.end_at.desc(), TlsReport.organization, TlsReport.report_id
                )
            ).all()
            return [_as_json(row) for row in rows]

    def summary(self, account: str, now: int | None = None) -> dict[str, dict[str, Any]]:
        """Per verified domain of ACCOUNT: the reports received in the last SUMMARY_SECONDS and
        since the account has the domain (a previous owner's reports are not shown), their
        session counts, and the failed sessions by result type and reporting organisation."""
        now = int(time.time()) if now is None else now
        with self.db.session() as s:
            domains = s.execute(
                select(Domain.name, Domain.created_at).where(
                    Domain.account == account, Domain.verified
                )
            ).all()
            out: dict[str, dict[str, Any]] = {}
            for name, since in domains:
                rows = s.scalars(
                    select(TlsReport).where(
                        TlsReport.policy_domain == name,
                        TlsReport.received_at >= max(since, now - SUMMARY_SECONDS),
                    )
                ).all()
                failures: dict[tuple[str, str], int] = {}
                for row in rows:
                    for result_type, _mx, sessions in json.loads(row.failures):
                        key = (result_type, row.organization)
                        failures[key] = failures.get(key, 0) + sessions
                out[name] = {
                    "reports": len({(r.organization, r.report_id) for r in rows}),
                    "successful": sum(r.successful for r in rows),
                    "failed": sum(r.failed for r in rows),
                    "failures": [
                        {"result_type": t, "organization": org, "sessions": n}
                        for (t, org), n in sorted(failures.items())
                    ],
                }
            return out


def _as_json(row: TlsReport) -> dict[str, Any]:
    return {
        "organization": row.organization,
        "report_id": row.report_id,
        "start": row.start_at,
        "end": row.end_at,
        "policy_domain": row.policy_domain,
        "policy_type": row.policy_type,
        "successful": row.successful,
        "failed": row.failed,
        "failures": [
            {"result_type": t, "mx_host": mx, "sessions": n}
            for t, mx, n in json.loads(row.failures)
        ],
    }

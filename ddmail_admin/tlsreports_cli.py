"""`ddmail admin tls-reports`: the SMTP TLS reports (RFC 8460) received for the hosted domains,
one line per report and policy, tab-separated (docs/architecture.md §9)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ddmail_admin import target as admin_target


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def report_line(report: dict[str, Any]) -> str:
    """start, end, organisation, report id, policy domain, policy type, successful and failed
    sessions, failures (`TYPE[@MX]=SESSIONS`, comma-separated; `-` for none)."""
    failures = ",".join(
        f"{f['result_type']}{'@' + f['mx_host'] if f['mx_host'] else ''}={f['sessions']}"
        for f in report["failures"]
    )
    fields = (
        _when(report["start"]),
        _when(report["end"]),
        report["organization"],
        report["report_id"],
        report["policy_domain"],
        report["policy_type"],
        str(report["successful"]),
        str(report["failed"]),
        failures or "-",
    )
    # Organisation and report id never hold a tab: ddmail_common.tlsrpt keeps printable text.
    return "\t".join(fields)


def cmd_tls_reports(args: argparse.Namespace) -> int:
    client = admin_target.admin_client(admin_target.config(args))
    for report in client.call("GET", "/v1/tls-reports")["reports"]:
        print(report_line(report))
    return 0


def add_commands(admin: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    reports = admin.add_parser(
        "tls-reports", help="SMTP TLS reports (RFC 8460) received for the hosted domains"
    )
    admin_target.add_arguments(reports)
    reports.set_defaults(func=cmd_tls_reports)

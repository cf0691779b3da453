"""SMTP TLS reports (RFC 8460): from a report mail to the summary DDMail keeps.

The report parser (`ddmail-tlsrpt`) reads the mail and turns its JSON into a `Report`; the
backend checks the same shape again (`Report.from_summary`) before it stores one. What is kept:
the reporting organisation, the report id, the date range, and per policy its domain, type,
session counts and the failures by result type and receiving MX host name. Every address
(sending-mta-ip, receiving-ip), the free-text fields (additional-information,
failure-reason-code, contact-info) and the policy text are dropped here, so they never reach a
log, the API or the database.
"""

from __future__ import annotations

import email.policy
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from ddmail_common.validators import InvalidInput, normalize_domain

# Real reports are a few kilobytes; these bounds keep a hostile one cheap to refuse.
MAX_MESSAGE = 1024 * 1024
MAX_REPORT_JSON = 1024 * 1024
MAX_POLICIES = 100
MAX_FAILURES = 1000
MAX_TEXT = 200
MAX_COUNT = 2**53  # JSON's exact integers
POLICY_TYPES = frozenset({"tlsa", "sts", "no-policy-found"})
GZIP_TYPE = "application/tlsrpt+gzip"
JSON_TYPE = "application/tlsrpt+json"


class ReportError(ValueError):
    """The mail is not a report DDMail accepts. The reason is a fixed sentence: it names no
    value from the report, so it is safe to log."""


@dataclass(frozen=True)
class Failure:
    result_type: str
    mx_host: str  # "" when the report named none, or named it by address
    sessions: int


@dataclass(frozen=True)
class Policy:
    domain: str  # A-label, lower case
    type: str
    successful: int
    failed: int
    failures: tuple[Failure, ...]


@dataclass(frozen=True)
class Report:
    organization: str
    report_id: str
    start: int  # seconds since the epoch
    end: int
    policies: tuple[Policy, ...]

    def as_summary(self) -> dict[str, Any]:
        """What the parser sends to the backend (POST /v1/tls-reports)."""
        return {
            "organization": self.organization,
            "report_id": self.report_id,
            "start": self.start,
            "end": self.end,
            "policies": [
                {
                    "domain": p.domain,
                    "type": p.type,
                    "successful": p.successful,
                    "failed": p.failed,
                    "failures": [
                        {"result_type": f.result_type, "mx_host": f.mx_host, "sessions": f.sessions}
                        for f in p.failures
                    ],
                }
                for p in self.policies
            ],
        }

    @classmethod
    def from_summary(cls, data: Any) -> Report:
        """The backend's check of what a caller sent: the same rules as the parser's."""
        obj = _object(data, "summary")
        start, end = _count(obj.get("start"), "start"), _count(obj.get("end"), "end")
        if start > end:
            raise ReportError("The report's date range ends before it starts.")
        policies = [
            Policy(
                domain=_domain(p.get("domain")),
                type=_policy_type(p.get("type")),
                successful=_count(p.get("successful"), "session count"),
                failed=_count(p.get("failed"), "session count"),
                failures=tuple(
                    Failure(
                        _result_type(f.get("result_type")),
                        _mx_host(f.get("mx_host")),
                        _count(f.get("sessions"), "session count"),
                    )
                    for f in _objects(p.get("failures"), "failures", MAX_FAILURES)
                ),
            )
            for p in _objects(obj.get("policies"), "policies", MAX_POLICIES)
        ]
        return cls(
            organization=_text(obj.get("organization"), "organization"),
            report_id=_text(obj.get("report_id"), "report id"),
            start=start,
            end=end,
            policies=_merge(policies),
        )


def report_json(message: bytes) -> bytes:
    """The report carried by a report mail (RFC 8460 §5.3: a part of type
    application/tlsrpt+gzip or application/tlsrpt+json, usually inside multipart/report),
    decompressed."""
    if len(message) > MAX_MESSAGE:
        raise ReportError("The mail is larger than a TLS report may be.")
    parsed = BytesParser(policy=email.policy.default).parsebytes(message)
    assert isinstance(parsed, EmailMessage)  # the default policy's message class
    for part in parsed.walk():
        kind = part.get_content_type()
        if kind not in (GZIP_TYPE, JSON_TYPE):
            continue
        body = part.get_payload(decode=True)
        if not isinstance(body, bytes):
            raise ReportError("The report part of the mail cannot be decoded.")
        return _gunzip(body) if kind == GZIP_TYPE else _bounded(body)
    raise ReportError("The mail has no application/tlsrpt+gzip or +json part.")


def _bounded(data: bytes) -> bytes:
    if len(data) > MAX_REPORT_JSON:
        raise ReportError("The report is larger than a TLS report may be.")
    return data


def _gunzip(data: bytes) -> bytes:
    # wbits 16+MAX_WBITS: gzip framing only. max_length stops a decompression bomb early.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_REPORT_JSON + 1)
    except zlib.error:
        raise ReportError("The report is not valid gzip.") from None
    if len(out) > MAX_REPORT_JSON:
        raise ReportError("The report is larger than a TLS report may be.")
    if not inflater.eof:
        raise ReportError("The report is not valid gzip.")
    return out


def parse_report(raw: bytes) -> Report:
    """RFC 8460 §4 JSON to a Report, keeping only what DDMail stores."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ReportError("The report is not valid JSON.") from None
    obj = _object(data, "report")
    dates = _object(obj.get("date-range"), "date-range")
    start = _datetime(dates.get("start-datetime"))
    end = _datetime(dates.get("end-datetime"))
    if start > end:
        raise ReportError("The report's date range ends before it starts.")
    policies = []
    for item in _objects(obj.get("policies"), "policies", MAX_POLICIES):
        policy = _object(item.get("policy"), "policy")
        summary = _object(item.get("summary"), "summary")
        failures = tuple(
            Failure(
                _result_type(detail.get("result-type")),
                _mx_host(detail.get("receiving-mx-hostname")),
                _count(detail.get("failed-session-count"), "failed-session-count"),
            )
            # failure-details is optional (a report with no failures may leave it out).
            for detail in _objects(item.get("failure-details", []), "failure-details", MAX_FAILURES)
        )
        policies.append(
            Policy(
                domain=_domain(policy.get("policy-domain")),
                type=_policy_type(policy.get("policy-type")),
                successful=_count(
                    summary.get("total-successful-session-count"), "total-successful-session-count"
                ),
                failed=_count(
                    summary.get("total-failure-session-count"), "total-failure-session-count"
                ),
                failures=failures,
            )
        )
    return Report(
        organization=_text(obj.get("organization-name"), "organization-name"),
        report_id=_text(obj.get("report-id"), "report-id"),
        start=start,
        end=end,
        policies=_merge(policies),
    )


def _merge(policies: Iterable[Policy]) -> tuple[Policy, ...]:
    """One policy per (domain, type), failures summed per (result type, MX host): a report may
    list one TLSA policy per MX host of a domain, and what DDMail shows is per domain."""
    merged: dict[tuple[str, str], tuple[int, int, dict[tuple[str, str], int]]] = {}
    for p in policies:
        ok, failed, failures = merged.get((p.domain, p.type), (0, 0, {}))
        for f in p.failures:
            key = (f.result_type, f.mx_host)
            failures[key] = failures.get(key, 0) + f.sessions
        merged[(p.domain, p.type)] = (ok + p.successful, failed + p.failed, failures)
    if not merged:
        raise ReportError("The report names no policy.")
    return tuple(
        Policy(
            domain,
            kind,
            min(ok, MAX_COUNT),
            min(failed, MAX_COUNT),
            tuple(Failure(t, mx, min(n, MAX_COUNT)) for (t, mx), n in sorted(failures.items())),
        )
        for (domain, kind), (ok, failed, failures) in sorted(merged.items())
    )


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReportError(f"The report's {what} is missing or not an object.")
    return value


def _objects(value: Any, what: str, limit: int) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise ReportError(f"The report's {what} is missing or not a list.")
    if len(value) > limit:
        raise ReportError(f"The report has more {what} than DDMail accepts.")
    return [_object(item, what + " entry") for item in value]


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise ReportError(f"The report's {what} is missing, empty or too long.")
    if not value.isprintable():
        raise ReportError(f"The report's {what} contains control characters.")
    return value.strip()


def _count(value: Any, what: str) -> int:
    # bool is an int in Python; JSON's true is not a count.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ReportError(f"The report's {what} is not a count.")
    return value


def _datetime(value: Any) -> int:
    if not isinstance(value, str) or len(value) > 40:
        raise ReportError("The report's date range is not RFC 3339 date-times.")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ReportError("The report's date range is not RFC 3339 date-times.") from None
    if when.tzinfo is None:
        raise ReportError("The report's date range is not RFC 3339 date-times.")
    return int(when.timestamp())


def _domain(value: Any) -> str:
    if not isinstance(value, str):
        raise ReportError("A policy of the report has no policy-domain.")
    try:
        return normalize_domain(value)
    except InvalidInput:
        raise ReportError("A policy-domain of the report is not a domain name.") from None


def _policy_type(value: Any) -> str:
    if value not in POLICY_TYPES:
        raise ReportError("A policy-type of the report is not tlsa, sts or no-policy-found.")
    return str(value)


def _result_type(value: Any) -> str:
    # RFC 8460 §4.3 names eleven types and lets later documents add more: any short token.
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= 64
        or not all(c.isascii() and (c.isalnum() or c == "-") for c in value)
    ):
        raise ReportError("A result-type of the report is not a result type.")
    return value.lower()


def _mx_host(value: Any) -> str:
    """A receiving MX host name, or "" — never an address: a host name that is really an IP
    literal, or anything that is not a host name, is dropped rather than kept."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        return normalize_domain(value)
    except InvalidInput:
        return ""

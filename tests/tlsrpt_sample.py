"""The example report of RFC 8460 (Appendix B), mailed as a reporter sends it (§5.3: a
multipart/report of report-type tlsrpt with the report as an application/tlsrpt+gzip
attachment), for the unit and integration tests of TLS reporting."""

from __future__ import annotations

import copy
import gzip
import json
from email.message import EmailMessage
from typing import Any

# Appendix B as published, but for POLICY_DOMAIN (a test passes the domain it hosts). The one
# change besides: the RFC breaks the additional-information URL over two lines, which no JSON
# parser accepts, so it is joined here.
RFC8460_EXAMPLE: dict[str, Any] = {
    "organization-name": "Company-X",
    "date-range": {
        "start-datetime": "2016-04-01T00:00:00Z",
        "end-datetime": "2016-04-01T23:59:59Z",
    },
    "contact-info": "sts-reporting@company-x.example",
    "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
    "policies": [
        {
            "policy": {
                "policy-type": "sts",
                "policy-string": [
                    "version: STSv1",
                    "mode: testing",
                    "mx: *.mail.company-y.example",
                    "max_age: 86400",
                ],
                "policy-domain": "company-y.example",
                "mx-host": ["*.mail.company-y.example"],
            },
            "summary": {
                "total-successful-session-count": 5326,
                "total-failure-session-count": 303,
            },
            "failure-details": [
                {
                    "result-type": "certificate-expired",
                    "sending-mta-ip": "2001:db8:abcd:0012::1",
                    "receiving-mx-hostname": "mx1.mail.company-y.example",
                    "failed-session-count": 100,
                },
                {
                    "result-type": "starttls-not-supported",
                    "sending-mta-ip": "2001:db8:abcd:0013::1",
                    "receiving-mx-hostname": "mx2.mail.company-y.example",
                    "receiving-ip": "203.0.113.56",
                    "failed-session-count": 200,
                    "additional-information": "https://reports.company-x.example/"
                    "report_info ? id = 5065427c-23d3#StarttlsNotSupported",
                },
                {
                    "result-type": "validation-failure",
                    "sending-mta-ip": "198.51.100.62",
                    "receiving-ip": "203.0.113.58",
                    "receiving-mx-hostname": "mx-backup.mail.company-y.example",
                    "failed-session-count": 3,
                    "failure-reason-code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED",
                },
            ],
        }
    ],
}
# Every address the example carries: none may be stored, logged or shown.
EXAMPLE_ADDRESSES = (
    "2001:db8:abcd:0012::1",
    "2001:db8:abcd:12::1",
    "2001:db8:abcd:0013::1",
    "2001:db8:abcd:13::1",
    "203.0.113.56",
    "198.51.100.62",
    "203.0.113.58",
)


def example_report(
    policy_domain: str, report_id: str | None = None, mx_suffix: str | None = None
) -> dict[str, Any]:
    """The example for POLICY_DOMAIN (its MX names under MX_SUFFIX, default the domain)."""
    report = copy.deepcopy(RFC8460_EXAMPLE)
    if report_id is not None:
        report["report-id"] = report_id
    policy = report["policies"][0]
    policy["policy"]["policy-domain"] = policy_domain
    suffix = mx_suffix or policy_domain
    for detail in policy["failure-details"]:
        detail["receiving-mx-hostname"] = detail["receiving-mx-hostname"].replace(
            "company-y.example", suffix
        )
    return report


def report_mail(
    report: dict[str, Any] | bytes,
    to: str,
    *,
    sender: str = "tlsrpt-noreply@company-x.example",
    compress: bool = True,
) -> bytes:
    """REPORT (a dict, or raw bytes for a broken one) mailed as RFC 8460 §5.3 describes."""
    raw = report if isinstance(report, bytes) else json.dumps(report, indent=2).encode()
    policy_domain = "company-y.example"
    if isinstance(report, dict):
        policy_domain = report["policies"][0]["policy"]["policy-domain"]
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"Report Domain: {policy_domain} Submitter: company-x.example Report-ID: <x>"
    msg["TLS-Report-Domain"] = policy_domain
    msg["TLS-Report-Submitter"] = "company-x.example"
    msg.set_content("This is an aggregate TLS report from company-x.example\n")
    kind = "tlsrpt+gzip" if compress else "tlsrpt+json"
    name = f"company-x.example!{policy_domain}!1459468800!1459555199!report.json"
    msg.add_attachment(
        gzip.compress(raw, mtime=0) if compress else raw,
        maintype="application",
        subtype=kind,
        filename=name + (".gz" if compress else ""),
    )
    # multipart/report; report-type="tlsrpt" (§5.3), not the multipart/mixed add_attachment made.
    msg.set_type("multipart/report")
    msg.set_param("report-type", "tlsrpt")
    return msg.as_bytes()

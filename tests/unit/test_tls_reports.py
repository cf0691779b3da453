"""SMTP TLS reports (RFC 8460): the parser on the RFC's own example mailed as gzip, what it
refuses, and the report parser (ddmail-tlsrpt's Intake) storing through the real backend."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from ddmail_admin.tlsreports_cli import report_line
from ddmail_backend.tlsrpt_intake import ACCEPTED, TEMPFAIL_BACKEND, Intake
from ddmail_common.client import ServiceClient
from ddmail_common.errors import ApiError
from ddmail_common.tlsrpt import MAX_MESSAGE, ReportError, parse_report, report_json
from tests.services import Services, db_rows, running_services
from tests.stackrun import postgres_url
from tests.tlsrpt_sample import EXAMPLE_ADDRESSES, example_report, report_mail

pytestmark = pytest.mark.postgres

GLOBAL = "ddmail.test"
ACCOUNT = "acct-tls"
CUSTOMER = "customer.example"
TO = f"tlsrpt@{GLOBAL}"


def summary_of(report: dict[str, object] | bytes, *, compress: bool = True) -> dict[str, object]:
    return parse_report(report_json(report_mail(report, TO, compress=compress))).as_summary()


def test_the_rfc_example_mailed_as_gzip_is_parsed_without_addresses() -> None:
    summary = summary_of(example_report("company-y.example"))
    assert summary == {
        "organization": "Company-X",
        "report_id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
        "start": 1459468800,  # 2016-04-01T00:00:00Z
        "end": 1459555199,
        "policies": [
            {
                "domain": "company-y.example",
                "type": "sts",
                "successful": 5326,
                "failed": 303,
                "failures": [
                    {
                        "result_type": "certificate-expired",
                        "mx_host": "mx1.mail.company-y.example",
                        "sessions": 100,
                    },
                    {
                        "result_type": "starttls-not-supported",
                        "mx_host": "mx2.mail.company-y.example",
                        "sessions": 200,
                    },
                    {
                        "result_type": "validation-failure",
                        "mx_host": "mx-backup.mail.company-y.example",
                        "sessions": 3,
                    },
                ],
            }
        ],
    }
    text = json.dumps(summary)
    assert not [a for a in EXAMPLE_ADDRESSES if a in text]
    # The free-text fields go too: they may carry anything.
    assert "X509_V_ERR" not in text and "report_info" not in text and "contact" not in text


def test_plain_json_attachment_is_read_too() -> None:
    assert summary_of(example_report("company-y.example"), compress=False)["organization"] == (
        "Company-X"
    )


def test_an_mx_host_given_as_an_address_is_dropped_and_tlsa_policies_merge() -> None:
    report = example_report("company-y.example")
    policy = report["policies"][0]  # type: ignore[index]
    policy["failure-details"][0]["receiving-mx-hostname"] = "[203.0.113.56]"
    second = json.loads(json.dumps(policy))
    for entry in (policy, second):
        entry["policy"]["policy-type"] = "tlsa"
    report["policies"] = [policy, second]  # type: ignore[index]
    (merged,) = summary_of(report)["policies"]  # type: ignore[misc]
    assert merged["successful"] == 2 * 5326 and merged["failed"] == 2 * 303
    assert {"result_type": "certificate-expired", "mx_host": "", "sessions": 200} in merged[
        "failures"
    ]
    assert "203.0.113.56" not in json.dumps(merged)


@pytest.mark.parametrize(
    ("mail", "reason"),
    [
        (report_mail(b"{not json", TO), "not valid JSON"),
        (report_mail(b"[]", TO), "report is missing or not an object"),
        (
            report_mail(json.dumps({**example_report("a.example"), "policies": []}).encode(), TO),
            "names no policy",
        ),
        (
            report_mail(json.dumps(example_report("a.example")).replace("5326", "-1").encode(), TO),
            "not a count",
        ),
        (
            report_mail(
                json.dumps(example_report("a.example")).replace('"sts"', '"other"').encode(), TO
            ),
            "policy-type",
        ),
        (
            report_mail(
                json.dumps(example_report("a.example"))
                .replace("2016-04-01T00:00:00Z", "yesterday")
                .encode(),
                TO,
            ),
            "RFC 3339",
        ),
        (
            report_mail(
                json.dumps(example_report("a.example"))
                .replace('"a.example"', '"10.1.2.3"')
                .encode(),
                TO,
            ),
            "not a domain name",
        ),
        (b"From: a@b.example\r\nSubject: hello\r\n\r\nno report here\r\n", "no application/tlsrpt"),
    ],
)
def test_malformed_reports_are_refused_with_a_fixed_reason(mail: bytes, reason: str) -> None:
    with pytest.raises(ReportError, match=reason):
        parse_report(report_json(mail))


def test_broken_gzip_and_oversize_reports_are_refused() -> None:
    good = report_mail(example_report("a.example"), TO)
    broken = good.replace(b"H4sI", b"AAAA", 1)  # the gzip magic, base64-encoded
    with pytest.raises(ReportError, match="not valid gzip"):
        report_json(broken)
    with pytest.raises(ReportError, match="larger than a TLS report"):
        report_json(good + b" " * MAX_MESSAGE)
    # A small mail that inflates beyond the bound (a decompression bomb) stops early.
    bomb = report_mail(b" " * (4 * MAX_MESSAGE), TO)  # report_mail gzips it: a few kB
    assert len(bomb) < MAX_MESSAGE // 50
    with pytest.raises(ReportError, match="larger than a TLS report"):
        report_json(bomb)


# --- the parser's process and the backend ------------------------------------------------------


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Services]:
    with running_services(tmp_path, postgres_url()) as services:
        yield services


def intake(svc: Services) -> Intake:
    return Intake(ServiceClient("tlsrpt", svc.cfg.secret("tlsrpt"), svc.cfg.backend_socket, "b"))


def stored(svc: Services) -> list[dict[str, object]]:
    return list(svc.admin.call("GET", "/v1/tls-reports")["reports"])


def verified_customer_domain(svc: Services, name: str = CUSTOMER, account: str = ACCOUNT) -> None:
    made = svc.web.call("POST", "/v1/domains", {"account": account, "name": name})
    svc.resolver.records[(f"_ddmail-verify.{name}", "TXT")] = [f"ddmail-verify={made['token']}"]
    assert svc.web.call("POST", "/v1/domains/verify", {"account": account, "name": name})[
        "verified"
    ]


def test_a_report_for_the_global_domain_is_stored_once_without_addresses(
    svc: Services, caplog: pytest.LogCaptureFixture
) -> None:
    mail = report_mail(example_report(GLOBAL), TO)
    assert intake(svc).handle(mail) == ACCEPTED
    assert intake(svc).handle(mail) == ACCEPTED  # the same mail again
    # The same report id from the same organisation in another mail: still a duplicate.
    assert intake(svc).handle(report_mail(example_report(GLOBAL), TO, compress=False)) == ACCEPTED
    (report,) = stored(svc)
    assert report["policy_domain"] == GLOBAL and report["failed"] == 303
    assert report_line(report) == (
        "2016-04-01T00:00:00Z\t2016-04-01T23:59:59Z\tCompany-X\t"
        "5065427c-23d3-47ca-b6e0-946ea0e8c4be\tddmail.test\tsts\t5326\t303\t"
        "certificate-expired@mx1.mail.ddmail.test=100,"
        "starttls-not-supported@mx2.mail.ddmail.test=200,"
        "validation-failure@mx-backup.mail.ddmail.test=3"
    )
    table = repr(db_rows(svc, "SELECT * FROM backend_tls_reports"))
    assert not [a for a in EXAMPLE_ADDRESSES if a in table]
    assert not [a for a in EXAMPLE_ADDRESSES if a in caplog.text]


def test_reports_for_unknown_or_unverified_domains_are_ignored(
    svc: Services, caplog: pytest.LogCaptureFixture
) -> None:
    svc.web.call("POST", "/v1/domains", {"account": ACCOUNT, "name": "pending.example"})
    with caplog.at_level(logging.WARNING):
        for domain in ("unknown.example", "pending.example"):
            assert intake(svc).handle(report_mail(example_report(domain), TO)) == ACCEPTED
    assert stored(svc) == []
    assert caplog.text.count("TLS-RPT report ignored: it names no domain hosted here") == 2


def test_malformed_reports_are_logged_and_not_stored(
    svc: Services, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        answer = intake(svc).handle(report_mail(b'{"sending-mta-ip": "198.51.100.62"', TO))
    assert answer == ACCEPTED and stored(svc) == []
    assert "TLS-RPT report refused: The report is not valid JSON." in caplog.text
    assert "198.51.100.62" not in caplog.text


def test_only_the_report_parser_may_store_and_it_is_retried_while_the_backend_is_away(
    svc: Services, tmp_path: Path
) -> None:
    summary = summary_of(example_report(GLOBAL))
    with pytest.raises(ApiError) as refused:
        svc.web.call("POST", "/v1/tls-reports", summary)
    assert refused.value.status == 403
    away = Intake(ServiceClient("tlsrpt", svc.cfg.secret("tlsrpt"), tmp_path / "none", "b"))
    assert away.handle(report_mail(example_report(GLOBAL), TO)) == TEMPFAIL_BACKEND
    # What the backend gets is checked again, whoever sent it.
    client = ServiceClient("tlsrpt", svc.cfg.secret("tlsrpt"), svc.cfg.backend_socket, "b")
    with pytest.raises(ApiError, match="not a count"):
        client.call("POST", "/v1/tls-reports", {**summary, "start": -5})
    assert stored(svc) == []


def test_the_customer_sees_failures_by_type_and_organisation_for_its_own_domain(
    svc: Services,
) -> None:
    verified_customer_domain(svc)
    verified_customer_domain(svc, "other.example", "acct-other")
    mail = report_mail(example_report(CUSTOMER), TO)
    assert intake(svc).handle(mail) == ACCEPTED
    other = example_report("other.example", report_id="another-report")
    assert intake(svc).handle(report_mail(other, TO)) == ACCEPTED
    answer = svc.web.call("GET", f"/v1/tls-reports/summary?account={ACCOUNT}")
    assert answer["domains"] == {
        CUSTOMER: {
            "reports": 1,
            "successful": 5326,
            "failed": 303,
            "failures": [
                {
                    "result_type": "certificate-expired",
                    "organization": "Company-X",
                    "sessions": 100,
                },
                {
                    "result_type": "starttls-not-supported",
                    "organization": "Company-X",
                    "sessions": 200,
                },
                {"result_type": "validation-failure", "organization": "Company-X", "sessions": 3},
            ],
        }
    }

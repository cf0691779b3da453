"""SMTP TLS reports through the real stack (issue 11, TLS-RPT): the RFC 8460 example, gzip'd and
mailed to tlsrpt@ of the global domain on port 25 as a reporter sends it, reaches the operator
mailbox as before and, through Postfix's blind copy to ddmail-tlsrpt, shows up parsed in
`ddmail admin tls-reports` and on the domains page of the customer whose domain it is about."""

from __future__ import annotations

import html
import re
import uuid

from sqlalchemy import create_engine, text

from tests.httpsbrowser import HttpsBrowser
from tests.integration.test_cli import ddmail
from tests.stackrun import RunningStack, wait_until
from tests.tlsrpt_sample import EXAMPLE_ADDRESSES, example_report, report_mail


def tls_report_lines(stack: RunningStack) -> list[list[str]]:
    result = ddmail(stack, "admin", "tls-reports", "--root", str(stack.root))
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()]


def element(page: str, element_id: str) -> str:
    """The text of the element with ELEMENT_ID (tags dropped, whitespace collapsed)."""
    match = re.search(rf'<(\w+)[^>]* id="{re.escape(element_id)}"[^>]*>(.*?)</\1>', page, re.S)
    assert match, f"no element #{element_id}"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", match.group(2))).split())


def test_a_mailed_gzip_report_is_parsed_listed_and_shown_to_the_domain_owner(
    stack: RunningStack,
) -> None:
    assert stack.dns is not None
    browser = HttpsBrowser(stack.info["web_url"], stack.tls())
    reg = browser.register()
    assert browser.login(reg).status == 302
    customer = f"tls{uuid.uuid4().hex[:8]}.example"
    client = stack.client()
    claim = client.call("POST", "/v1/domains", {"account": reg.account, "name": customer})
    stack.dns.publish(
        customer, f'_ddmail-verify.{customer}. IN TXT "ddmail-verify={claim["token"]}"'
    )
    assert client.call("POST", "/v1/domains/verify", {"account": reg.account, "name": customer})[
        "verified"
    ]

    report_id = f"rfc8460-{uuid.uuid4()}"
    report_to = f"tlsrpt@{stack.info['global_domain']}"
    mail = report_mail(example_report(customer, report_id=report_id), report_to)
    with stack.smtp() as s:
        s.sendmail("tlsrpt-noreply@example.org", [report_to], mail)

    def listed() -> list[str] | None:
        return next((c for c in tls_report_lines(stack) if c[3] == report_id), None)

    line = wait_until(listed, what="the report in `ddmail admin tls-reports`")
    assert line == [
        "2016-04-01T00:00:00Z",
        "2016-04-01T23:59:59Z",
        "Company-X",
        report_id,
        customer,
        "sts",
        "5326",
        "303",
        f"certificate-expired@mx1.mail.{customer}=100,"
        f"starttls-not-supported@mx2.mail.{customer}=200,"
        f"validation-failure@mx-backup.mail.{customer}=3",
    ]
    # The operator mailbox (the stack's sink) still gets the report mail itself.
    wait_until(lambda: stack.sink_files(f"TLS-Report-Domain: {customer}"), what="operator copy")

    page = browser.get("/settings/domains").text
    assert element(page, f"tls-summary-{customer}") == (
        "1 report from sending mail servers (SMTP TLS reporting, RFC 8460): 5326 sessions used "
        "TLS as your policy asks, 303 failed."
    )
    assert element(page, f"tls-failures-{customer}") == (
        "Failure Reported by Sessions "
        "certificate-expired Company-X 100 "
        "starttls-not-supported Company-X 200 "
        "validation-failure Company-X 3"
    )

    # Stored without any of the addresses the report carried.
    engine = create_engine(stack.info["db_url"])
    try:
        with engine.connect() as conn:
            rows = repr(list(conn.execute(text("SELECT * FROM backend_tls_reports"))))
    finally:
        engine.dispose()
    assert report_id in rows and not [a for a in EXAMPLE_ADDRESSES if a in rows]

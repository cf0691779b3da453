"""MTA-STS for customer domains (issue 11): the panel serves the policy at
https://mta-sts.<domain>/ for global and verified customer domains only (the Host header
decides, as nginx passes it), the backend names those hosts for the certificate job, and the
domains page asks for the `_mta-sts` TXT record with the id of exactly the policy served."""

from __future__ import annotations

import hashlib
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ddmail_common.errors import ApiError
from ddmail_common.mta_sts import policy_id, policy_text
from tests.services import Services, db_run
from tests.webclient import Browser

pytestmark = pytest.mark.postgres
POLICY = "/.well-known/mta-sts.txt"
ACCOUNT = "acct-sts"


def fetch(app: Flask, host: str) -> tuple[int, bytes]:
    client: FlaskClient = app.test_client()
    resp = client.get(POLICY, base_url=f"https://{host}")
    return resp.status_code, resp.get_data()


def own_domain(svc: Services, name: str, verify: bool = True) -> None:
    claim = svc.web.call("POST", "/v1/domains", {"account": ACCOUNT, "name": name})
    if verify:
        svc.resolver.records[(f"_ddmail-verify.{name}", "TXT")] = [
            f"ddmail-verify={claim['token']}"
        ]
        answer = svc.web.call("POST", "/v1/domains/verify", {"account": ACCOUNT, "name": name})
        assert answer["state"] == "active"


def test_a_verified_customer_domain_gets_the_policy_with_the_services_mx(
    env: tuple[Services, Flask],
) -> None:
    svc, app = env
    own_domain(svc, "owned.example")
    status, body = fetch(app, "mta-sts.owned.example")
    assert status == 200
    assert body.decode() == policy_text(svc.cfg.public)
    lines = body.split(b"\r\n")
    assert lines[0] == b"version: STSv1" and lines[-1] == b""  # every line ends in CRLF
    assert b"\n" not in body.replace(b"\r\n", b"")
    mx = [line.removeprefix(b"mx: ").decode() for line in lines if line.startswith(b"mx: ")]
    assert mx == list(svc.cfg.public.mta_sts_mx) == [svc.cfg.mail_hostname]
    # The name as senders send it: any case, with the port.
    assert fetch(app, "MTA-STS.Owned.Example:443") == (200, body)


def test_unverified_unknown_and_suspended_domains_get_404(env: tuple[Services, Flask]) -> None:
    svc, app = env
    own_domain(svc, "claimed.example", verify=False)
    own_domain(svc, "suspended.example")
    db_run(svc, "UPDATE backend_domains SET enabled = false WHERE name = 'suspended.example'")
    unknown = fetch(app, "mta-sts.nobody.example")
    assert unknown[0] == 404
    # The same answer whatever the reason: nothing tells a claim from an unknown name.
    assert fetch(app, "mta-sts.claimed.example") == unknown
    assert fetch(app, "mta-sts.suspended.example") == unknown
    assert fetch(app, "mta-sts.mta-sts.ddmail.test")[0] == 404


def test_the_global_domain_and_the_panels_own_name_get_the_policy(
    env: tuple[Services, Flask],
) -> None:
    svc, app = env
    assert fetch(app, "mta-sts.ddmail.test") == (200, policy_text(svc.cfg.public).encode())
    assert fetch(app, "localhost")[0] == 200


def test_no_backend_answer_is_503_not_a_missing_policy(env: tuple[Services, Flask]) -> None:
    svc, app = env
    svc.cfg.backend_socket.rename(svc.cfg.backend_socket.with_suffix(".away"))
    try:
        assert fetch(app, "mta-sts.owned.example")[0] == 503
        assert fetch(app, "localhost")[0] == 200  # the panel's name needs no backend
    finally:
        svc.cfg.backend_socket.with_suffix(".away").rename(svc.cfg.backend_socket)


def test_the_certificate_job_reads_every_held_domains_host_and_only_admin_may(
    env: tuple[Services, Flask],
) -> None:
    svc, _ = env
    own_domain(svc, "owned.example")
    own_domain(svc, "claimed.example", verify=False)
    own_domain(svc, "suspended.example")
    db_run(svc, "UPDATE backend_domains SET enabled = false WHERE name = 'suspended.example'")
    hosts = svc.admin.call("GET", "/v1/mta-sts/hosts")["hosts"]
    # A suspended domain keeps its certificate (not served meanwhile); a claim gets none.
    assert hosts == ["mta-sts.ddmail.test", "mta-sts.owned.example", "mta-sts.suspended.example"]
    with pytest.raises(ApiError):
        svc.web.call("GET", "/v1/mta-sts/hosts")


def test_the_domains_page_asks_for_the_served_policys_id_and_the_policy_host(
    env: tuple[Services, Flask], browser: Browser
) -> None:
    svc, app = env
    browser.register_and_login()
    browser.post("/settings/domains", {"domain": "owned.example"})
    sts_id = policy_id(svc.cfg.public)

    def mta_sts_rows() -> list[tuple[str, str, str, str]]:
        page = browser.get("/settings/domains").get_data(as_text=True)
        return re.findall(
            r"<tr><td>MTA-STS</td><td>(\w+)</td><td>(\S+)</td>\s*<td><code[^>]*>([^<]+)</code>"
            r".*?<span class=\"flash-(\w+)\">",
            page,
            re.S,
        )

    assert mta_sts_rows() == [
        ("TXT", "_mta-sts.owned.example", f"v=STSv1; id={sts_id}", "error"),
        ("CNAME", "mta-sts.owned.example", "ddmail.test.", "error"),
    ]
    # The id the page asks for is the hash of exactly what the panel serves at the policy host.
    served = fetch(app, "mta-sts.ddmail.test")[1]
    assert sts_id == hashlib.sha256(served).hexdigest()[:20]
    svc.resolver.records[("_mta-sts.owned.example", "TXT")] = ["v=STSv1; id=20240101"]
    svc.resolver.records[("mta-sts.owned.example", "CNAME")] = ["ddmail.test."]
    assert [row[3] for row in mta_sts_rows()] == ["error", "success"]  # a stale id is not ok
    svc.resolver.records[("_mta-sts.owned.example", "TXT")] = [f"v=STSv1;id={sts_id} "]
    assert [row[3] for row in mta_sts_rows()] == ["success", "success"]

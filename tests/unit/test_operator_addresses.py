"""Reserved and operator addresses (issue 8 item 10): every address the service publishes is
reserved, and postmaster@, abuse@ and the report addresses reach the configured operator."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ddmail_backend.dnscheck import expected_records
from ddmail_common.config import ConfigError, parse
from ddmail_common.errors import ApiError
from ddmail_common.validators import OPERATOR_LOCAL_PARTS, is_reserved
from ddmail_web.app import create_app
from tests.services import Services, running_services, write_config
from tests.stackrun import postgres_url
from tests.unit.test_config import minimal

pytestmark = pytest.mark.postgres
ACCOUNT = "acct-1"
OPERATOR = "operator@ops.example"  # tests.services.write_config


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Services]:
    with running_services(tmp_path, postgres_url()) as services:
        services.web.call(
            "POST",
            "/v1/accounts/recovery-key",
            {"account": ACCOUNT, "secret": "recovery-secret-" + "x" * 30},
        )
        yield services


def operator_route(svc: Services, address: str) -> list[str]:
    """What Postfix's virtual alias lookup (sql-aliases.cf) answers for ADDRESS."""
    engine = create_engine(svc.cfg.db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT destination FROM mail_aliases WHERE address = :a "
                "UNION ALL SELECT destination FROM mail_operator_aliases WHERE address = :a"
            ),
            {"a": address},
        )
        found = [str(r[0]) for r in rows]
    engine.dispose()
    return found


@pytest.mark.parametrize("local", ["tlsrpt", "dmarc", "mta-sts", "mta.sts", "postmaster", "Abuse"])
def test_published_addresses_cannot_be_registered_as_mailbox_or_alias(
    svc: Services, local: str
) -> None:
    address = f"{local}@ddmail.test"
    for path, body in (
        ("/v1/mailboxes", {"account": ACCOUNT, "address": address}),
        ("/v1/aliases", {"account": ACCOUNT, "address": address, "destinations": [OPERATOR]}),
    ):
        with pytest.raises(ApiError) as exc:
            svc.web.call("POST", path, body)
        assert exc.value.status == 422 and exc.value.code == "reserved_address"
        assert "is reserved: the service uses it" in exc.value.message


def test_every_address_the_service_publishes_is_reserved() -> None:
    client = create_app(write_config(Path(tempfile.mkdtemp()), "sqlite://")).test_client()
    published: set[str] = set()
    for path in ("/contact", "/terms", "/about", "/help", "/.well-known/security.txt"):
        published |= set(re.findall(r"([a-z0-9.-]+)@ddmail\.test", client.get(path).text))
    for record in expected_records(
        "own.example", "t", "mail.ddmail.test", "ddmail.test", "0", "panel.ddmail.test"
    ):
        published |= set(re.findall(r"([a-z0-9.-]+)@ddmail\.test", record.value))
    published -= {"you"}  # the help page's example of a user's own address
    assert {"postmaster", "abuse", "security", "tlsrpt"} <= published
    assert all(is_reserved(local) for local in published), published


def test_operator_addresses_are_routed_to_the_operator_mailbox(svc: Services) -> None:
    for local in OPERATOR_LOCAL_PARTS:
        assert operator_route(svc, f"{local}@ddmail.test") == [OPERATOR]
    assert operator_route(svc, "alice@ddmail.test") == []


def test_postmaster_of_a_customer_domain_reaches_the_operator_until_the_customer_has_one(
    svc: Services,
) -> None:
    made = svc.web.call("POST", "/v1/domains", {"account": ACCOUNT, "name": "own.example"})
    assert operator_route(svc, "postmaster@own.example") == []  # only a claim: not ours yet
    token = f"ddmail-verify={made['token']}"
    svc.resolver.records[("_ddmail-verify.own.example", "TXT")] = [token]
    svc.web.call("POST", "/v1/domains/verify", {"account": ACCOUNT, "name": "own.example"})
    assert operator_route(svc, "postmaster@own.example") == [OPERATOR]
    assert operator_route(svc, "abuse@own.example") == [OPERATOR]
    assert operator_route(svc, "tlsrpt@own.example") == []  # the customer's own business
    svc.web.call("POST", "/v1/mailboxes", {"account": ACCOUNT, "address": "postmaster@own.example"})
    assert operator_route(svc, "postmaster@own.example") == []  # the customer's mailbox now


def test_operator_address_is_required_and_cannot_loop(tmp_path: Path) -> None:
    data = minimal(tmp_path)
    del data["backend"]["operator_address"]
    with pytest.raises(ConfigError, match=r"backend\.operator_address: missing"):
        parse(data)
    for looping in ("postmaster@ddmail.test", "Abuse@elsewhere.example", "not an address"):
        data["backend"]["operator_address"] = looping
        with pytest.raises(ConfigError, match=r"backend\.operator_address"):
            parse(data)

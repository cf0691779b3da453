"""The backend's signed JSON API (callers: the panel `web`, and the operator's `admin` CLI)."""

from __future__ import annotations

import logging
import subprocess
from collections import Counter
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Flask, Response, request

from ddmail_backend.accounts import Accounts
from ddmail_backend.addresses import parse_address
from ddmail_backend.aliases import Aliases
from ddmail_backend.dkim import DkimKeys
from ddmail_backend.dnscheck import DnsPythonResolver, Resolver
from ddmail_backend.domains import Domains, parse_domain
from ddmail_backend.jobs import JobQueue
from ddmail_backend.mailboxes import Mailboxes
from ddmail_backend.models import GLOBAL, AccountState, idempotency
from ddmail_backend.openpgp import OpenPgp
from ddmail_backend.operator import sync_operator_routes
from ddmail_backend.tlsreports import TlsReports
from ddmail_common.api import MAX_BODY, authenticated, field, json_body, json_response, make_api
from ddmail_common.client import ServiceClient
from ddmail_common.config import Config
from ddmail_common.db import Database
from ddmail_common.errors import bad_request
from ddmail_common.idempotency import IdempotencyStore
from ddmail_common.mta_sts import policy_id
from ddmail_common.signing import NonceCache, Verifier
from ddmail_common.tlsrpt import Report, ReportError

log = logging.getLogger(__name__)
PANEL = {"web", "admin"}
ADMIN = {"admin"}
REPORTS = {"tlsrpt"}  # ddmail-tlsrpt, the TLS report parser Postfix hands report mail to


def _owned(data: dict[str, Any], name: str) -> tuple[str, str]:
    """The account a request acts for, and the address or domain it names."""
    return field(data, "account", str, 64), field(data, name, str, 300)


def _account() -> str:
    account = request.args.get("account", "")
    if not account or len(account) > 64:
        raise bad_request("The query parameter 'account' is missing or too long.")
    return account


def create_app(
    cfg: Config,
    db: Database | None = None,
    resolver: Resolver | None = None,
    run_jobs: bool = True,
) -> Flask:
    db = db or Database(cfg.db_url)
    verifier = Verifier(
        {name: cfg.secret(name) for name in (*PANEL, *REPORTS)},
        NonceCache(),
    )
    app = make_api("ddmail_backend", verifier)
    keyhandler = ServiceClient("backend", cfg.secret("backend"), cfg.keyhandler_socket, "key")
    jobs = JobQueue(db)
    resolver = resolver or DnsPythonResolver(cfg.dns_nameservers, cfg.dns_port)
    domains = Domains(db, resolver, protected=[cfg.web.global_domain, cfg.mail_hostname])
    dkim = DkimKeys(db, cfg.dkim, resolver, cfg.web.global_domain, cfg.dns_ttl)
    sync_operator_routes(db, cfg.operator_address)
    added_global_domain = domains.ensure_global(cfg.web.global_domain)
    mailboxes = Mailboxes(db, keyhandler, jobs, cfg.mail_root, cfg.reserved_local_parts)
    aliases = Aliases(db, cfg.reserved_local_parts)
    openpgp = OpenPgp(keyhandler, mailboxes)
    accounts = Accounts(db, keyhandler, openpgp)
    idem = IdempotencyStore(db, idempotency)
    tls_reports = TlsReports(db)
    app.extensions["ddmail_jobs"] = jobs

    def reload_postfix() -> None:
        # Postfix caches which domains are local; a changed domain list needs a reload.
        if cfg.postfix_reload:
            subprocess.run(cfg.postfix_reload, check=False, capture_output=True, timeout=30)

    if added_global_domain:
        reload_postfix()

    if run_jobs:

        def periodic() -> None:
            mailboxes.reap_pending()
            dkim.maintain_now_and_then()
            changed = domains.maintain_now_and_then()
            if changed and (changed["suspended"] or changed["restored"]):
                reload_postfix()

        jobs.start(periodic=periodic)

    # -- global domains (operator) --------------------------------------------------------
    @app.post("/v1/domains/global")
    @authenticated(ADMIN)
    @idem.wrap
    def add_global_domain() -> Response:
        view = domains.add_global(field(json_body(), "name", str, 300))
        reload_postfix()
        dkim.maintain()  # its key pair now, not at the next periodic run
        return json_response(201, view.as_json())

    @app.get("/v1/domains/global")
    @authenticated(ADMIN)
    def list_global_domains() -> Response:
        return json_response(200, {"domains": [d.as_json() for d in domains.list(GLOBAL)]})

    @app.post("/v1/domains/global/enabled")
    @authenticated(ADMIN)
    @idem.wrap
    def set_global_enabled() -> Response:
        data = json_body()
        view = domains.set_global_enabled(
            field(data, "name", str, 300), field(data, "enabled", bool)
        )
        reload_postfix()
        return json_response(200, view.as_json())

    # -- DKIM keys (operator) --------------------------------------------------------------
    @app.get("/v1/dkim")
    @authenticated(ADMIN)
    def list_dkim_keys() -> Response:
        return json_response(200, {"keys": [k.as_json() for k in dkim.list()]})

    @app.post("/v1/dkim/rotate")
    @authenticated(ADMIN)
    @idem.wrap
    def rotate_dkim_keys() -> Response:
        data = json_body()
        domain = parse_domain(field(data, "domain", str, 300)) if "domain" in data else None
        return json_response(200, {"started": [k.as_json() for k in dkim.rotate(domain)]})

    # -- SMTP TLS reports (RFC 8460) ---------------------------------------------------------
    @app.post("/v1/tls-reports")
    @authenticated(REPORTS)
    @idem.wrap
    def store_tls_report() -> Response:
        try:
            report = Report.from_summary(json_body())
        except ReportError as exc:
            raise bad_request(str(exc)) from None
        return json_response(200, tls_reports.store(report))

    @app.get("/v1/tls-reports")
    @authenticated(ADMIN)
    def list_tls_reports() -> Response:
        return json_response(200, {"reports": tls_reports.list()})

    @app.get("/v1/tls-reports/summary")
    @authenticated(PANEL)
    def tls_report_summary() -> Response:
        return json_response(200, {"domains": tls_reports.summary(_account())})

    # -- account domains -------------------------------------------------------------------
    @app.get("/v1/domains")
    @authenticated(PANEL)
    def list_domains() -> Response:
        account = _account()
        own = [d.as_json() for d in domains.list(account=account)]
        usable = [d.name for d in domains.list(GLOBAL) if d.enabled]
        return json_response(200, {"domains": own, "global": usable})

    @app.get("/v1/domains/records")
    @authenticated(PANEL)
    def domain_records() -> Response:
        records = domains.records(
            _account(),
            cfg.mail_hostname,
            cfg.web.global_domain,
            policy_id(cfg.public),
            urlsplit(cfg.web.panel_url).hostname or "",
        )
        return json_response(200, {"domains": records})

    # -- MTA-STS policy hosts ----------------------------------------------------------------
    @app.get("/v1/mta-sts/hosts")
    @authenticated(ADMIN)
    def mta_sts_hosts() -> Response:
        # The root-run certificate job (`ddmail admin mta-sts certificates`) reads these.
        return json_response(200, {"hosts": domains.mta_sts_hosts()})

    @app.get("/v1/mta-sts/host")
    @authenticated(PANEL)
    def mta_sts_host() -> Response:
        host = request.args.get("name", "")
        if len(host) > 300:
            raise bad_request("The query parameter 'name' is too long.")
        return json_response(200, {"name": host, "served": domains.serves_mta_sts(host)})

    @app.post("/v1/domains")
    @authenticated(PANEL)
    @idem.wrap
    def add_domain() -> Response:
        data = json_body()
        view = domains.add_account_domain(*_owned(data, "name"))
        return json_response(201, view.as_json())

    @app.post("/v1/domains/verify")
    @authenticated(PANEL)
    @idem.wrap
    def verify_domain() -> Response:
        data = json_body()
        view = domains.verify(*_owned(data, "name"))
        reload_postfix()
        dkim.maintain()
        return json_response(200, view.as_json())

    @app.get("/v1/domains/events")
    @authenticated(PANEL)
    def domain_events() -> Response:
        return json_response(200, {"events": domains.events()})

    @app.post("/v1/domains/remove")
    @authenticated(PANEL)
    @idem.wrap
    def remove_domain() -> Response:
        data = json_body()
        account, name = _owned(data, "name")
        domains.remove(account, name)
        reload_postfix()
        return json_response(200, {"removed": True, "name": parse_domain(name)})

    # -- accounts ---------------------------------------------------------------------------
    @app.post("/v1/accounts/recovery-key")
    @authenticated(PANEL)
    @idem.wrap
    def set_recovery_key() -> Response:
        data = json_body()
        account = field(data, "account", str, 64)
        mailboxes.set_recovery_key(account, field(data, "secret", str, 1024))
        return json_response(201, {"account": account})

    @app.post("/v1/accounts/state")
    @authenticated(PANEL)
    @idem.wrap
    def set_account_state() -> Response:
        data = json_body()
        account, enabled = field(data, "account", str, 64), field(data, "enabled", bool)
        with db.session() as s:
            row = s.get(AccountState, account)
            if row is None:
                s.add(AccountState(account=account, enabled=enabled))
            else:
                row.enabled = enabled
        return json_response(200, {"account": account, "enabled": enabled})

    @app.post("/v1/accounts/remove")
    @authenticated(PANEL)
    @idem.wrap
    def remove_account() -> Response:
        account = field(json_body(), "account", str, 64)
        accounts.forget(account)
        return json_response(200, {"account": account, "removed": True})

    @app.get("/v1/usage")
    @authenticated(PANEL)
    def usage() -> Response:
        used = mailboxes.storage(_account())
        return json_response(200, {"bytes": sum(used.values()), "mailboxes": used})

    @app.get("/v1/overview")
    @authenticated(PANEL)
    def overview() -> Response:
        # The panel's settings page shows these on every visit: one call, counts only.
        account = _account()
        return json_response(
            200,
            {
                "mailboxes": dict(Counter(str(m["state"]) for m in mailboxes.list(account))),
                "aliases": aliases.count(account),
                "domains": dict(Counter(d.state for d in domains.list(account=account))),
                "openpgp": openpgp.summary(account),
            },
        )

    # -- mailboxes --------------------------------------------------------------------------
    @app.get("/v1/mailboxes")
    @authenticated(PANEL)
    def list_mailboxes() -> Response:
        return json_response(200, {"mailboxes": mailboxes.list(_account())})

    @app.post("/v1/mailboxes")
    @authenticated(PANEL)
    @idem.wrap
    def add_mailbox() -> Response:
        data = json_body()
        made = mailboxes.add(*_owned(data, "address"))
        return json_response(
            201, {"id": made.id, "address": made.address, "password": made.password}
        )

    @app.post("/v1/mailboxes/password")
    @authenticated(PANEL)
    @idem.wrap
    def change_mailbox_password() -> Response:
        data = json_body()
        account, address = _owned(data, "address")
        password = mailboxes.change_password(
            account, address, field(data, "current_password", str, 1024)
        )
        return json_response(200, {"password": password, "address": parse_address(address)})

    @app.post("/v1/mailboxes/reset")
    @authenticated(PANEL)
    @idem.wrap
    def reset_mailbox_password() -> Response:
        data = json_body()
        account, address = _owned(data, "address")
        password = mailboxes.reset_password(
            account, address, field(data, "recovery_secret", str, 1024)
        )
        return json_response(200, {"password": password, "address": parse_address(address)})

    @app.post("/v1/mailboxes/remove")
    @authenticated(PANEL)
    @idem.wrap
    def remove_mailbox() -> Response:
        data = json_body()
        account, address = _owned(data, "address")
        state = mailboxes.remove(account, address)
        return json_response(200, {"state": state, "address": parse_address(address)})

    # -- aliases ----------------------------------------------------------------------------
    @app.get("/v1/aliases")
    @authenticated(PANEL)
    def list_aliases() -> Response:
        return json_response(200, {"aliases": aliases.list(_account())})

    @app.post("/v1/aliases")
    @authenticated(PANEL)
    @idem.wrap
    def add_alias() -> Response:
        data = json_body()
        destinations = field(data, "destinations", list)
        if not all(isinstance(d, str) for d in destinations):
            raise bad_request("The field 'destinations' must be a list of addresses.")
        made = aliases.add(*_owned(data, "address"), destinations)
        return json_response(201, made)

    @app.post("/v1/aliases/remove")
    @authenticated(PANEL)
    @idem.wrap
    def remove_alias() -> Response:
        data = json_body()
        account, address = _owned(data, "address")
        aliases.remove(account, address)
        return json_response(200, {"removed": True, "address": parse_address(address)})

    # -- OpenPGP public keys (kept by the keyhandler) ---------------------------------------

    @app.get("/v1/openpgp/failures")
    @authenticated(PANEL)
    def openpgp_failures() -> Response:
        return json_response(200, keyhandler.call("GET", "/v1/openpgp/failures"))

    @app.get("/v1/openpgp/wkd")
    @authenticated(PANEL)
    def openpgp_wkd() -> Response:
        query = urlencode(
            {"domain": request.args.get("domain", ""), "hash": request.args.get("hash", "")}
        )
        return json_response(200, keyhandler.call("GET", f"/v1/openpgp/wkd?{query}"))

    @app.get("/v1/openpgp/keys")
    @authenticated(PANEL)
    def list_openpgp_keys() -> Response:
        return json_response(200, {"keys": openpgp.list(_account())})

    @app.post("/v1/openpgp/keys")
    @authenticated(PANEL)
    @idem.wrap
    def upload_openpgp_key() -> Response:
        data = json_body()
        account = field(data, "account", str, 64)
        made = openpgp.upload(account, field(data, "key", str, MAX_BODY))
        return json_response(200 if made["updated"] else 201, made)  # updated: same fingerprint

    @app.post("/v1/openpgp/activate")
    @authenticated(PANEL)
    @idem.wrap
    def activate_openpgp_key() -> Response:
        data = json_body()
        answer = openpgp.activate(*_owned(data, "address"), field(data, "fingerprint", str, 100))
        return json_response(200, answer)

    @app.post("/v1/openpgp/deactivate")
    @authenticated(PANEL)
    @idem.wrap
    def deactivate_openpgp_key() -> Response:
        return json_response(200, openpgp.deactivate(*_owned(json_body(), "address")))

    @app.post("/v1/openpgp/remove")
    @authenticated(PANEL)
    @idem.wrap
    def remove_openpgp_key() -> Response:
        return json_response(200, openpgp.remove(*_owned(json_body(), "fingerprint")))

    @app.post("/v1/openpgp/purge")
    @authenticated(PANEL)
    @idem.wrap
    def purge_openpgp_keys() -> Response:
        return json_response(200, openpgp.purge(field(json_body(), "account", str, 64)))

    return app

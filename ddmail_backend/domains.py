"""Global domains (operator-managed) and account domains (owned after DNS proof)."""

from __future__ import annotations

import builtins
import secrets
import time
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import func, select

from ddmail_backend.dnscheck import (
    DnsUnavailable,
    Resolver,
    expected_records,
    has_verification_token,
)
from ddmail_backend.models import ACCOUNT, GLOBAL, Alias, Domain, Mailbox
from ddmail_common.db import Database
from ddmail_common.errors import ApiError, conflict, not_found, rule_violated, unavailable
from ddmail_common.validators import InvalidInput, normalize_domain

# What a domains page may wait for DNS (all lookups run at once); below the resolver's lifetime.
DNS_BUDGET = 4.0
MAX_LOOKUPS_AT_ONCE = 32


def _answer(lookup: Future[builtins.list[str]]) -> builtins.list[str] | None:
    """A lookup's records, or None if it failed or did not finish within the budget."""
    if not lookup.done() or lookup.cancelled() or lookup.exception() is not None:
        return None
    return lookup.result()


def parse_domain(text: str) -> str:
    try:
        return normalize_domain(text)
    except InvalidInput as exc:
        raise ApiError(400, "invalid_domain", str(exc)) from None


@dataclass(frozen=True)
class DomainView:
    name: str
    kind: str
    enabled: bool
    verified: bool
    token: str | None

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "enabled": self.enabled,
            "verified": self.verified,
            "token": self.token,
        }


def _view(d: Domain) -> DomainView:
    return DomainView(d.name, d.kind, d.enabled, d.verified, d.token)


class Domains:
    def __init__(self, db: Database, resolver: Resolver) -> None:
        self.db = db
        self.resolver = resolver

    def add_global(self, text: str) -> DomainView:
        name = parse_domain(text)
        with self.db.session() as s:
            if s.execute(select(Domain).where(Domain.name == name)).scalar() is not None:
                raise conflict("This domain exists already.", "domain_exists")
            domain = Domain(
                name=name,
                kind=GLOBAL,
                account=None,
                enabled=True,
                verified=True,
                token=None,
                created_at=int(time.time()),
            )
            s.add(domain)
        return _view(domain)

    def list(self, kind: str | None = None, account: str | None = None) -> list[DomainView]:
        query = select(Domain).order_by(Domain.name)
        if kind is not None:
            query = query.where(Domain.kind == kind)
        if account is not None:
            query = query.where(Domain.account == account)
        with self.db.session() as s:
            return [_view(d) for d in s.execute(query).scalars()]

    def set_global_enabled(self, text: str, enabled: bool) -> DomainView:
        name = parse_domain(text)
        with self.db.session() as s:
            domain = s.execute(
                select(Domain).where(Domain.name == name, Domain.kind == GLOBAL)
            ).scalar()
            if domain is None:
                raise not_found("No such global domain.")
            domain.enabled = enabled
        return _view(domain)

    def add_account_domain(self, account: str, text: str) -> DomainView:
        name = parse_domain(text)
        with self.db.session() as s:
            if s.execute(select(Domain).where(Domain.name == name)).scalar() is not None:
                # Same answer whether another account has it or this one: no ownership leak.
                raise conflict("This domain is already in use.", "domain_exists")
            domain = Domain(
                name=name,
                kind=ACCOUNT,
                account=account,
                enabled=True,
                verified=False,
                token=secrets.token_urlsafe(24),
                created_at=int(time.time()),
            )
            s.add(domain)
        return _view(domain)

    def owned(self, account: str, text: str) -> Domain:
        name = parse_domain(text)
        with self.db.session() as s:
            domain = s.execute(
                select(Domain).where(Domain.name == name, Domain.account == account)
            ).scalar()
        if domain is None:
            raise not_found("No such domain in this account.")
        return domain

    def verify(self, account: str, text: str) -> DomainView:
        domain = self.owned(account, text)
        assert domain.token is not None
        try:
            ok = has_verification_token(self.resolver, domain.name, domain.token)
        except DnsUnavailable:
            raise unavailable("DNS could not be asked right now; try again later.") from None
        with self.db.session() as s:
            row = s.get(Domain, domain.id)
            if row is None:
                raise not_found("No such domain in this account.")
            row.verified = ok
            return _view(row)

    def records(
        self, account: str, mail_host: str, global_domain: str, budget: float = DNS_BUDGET
    ) -> dict[str, builtins.list[dict[str, object]]]:
        """Every record each of the account's domains needs, next to what DNS has now (None: DNS
        did not answer). All lookups run at once and the answer comes within BUDGET seconds
        whatever DNS does: a page view must not hold a worker for a slow or dead resolver."""
        wanted = [
            (domain.name, want)
            for domain in self.list(account=account)
            for want in expected_records(domain.name, domain.token or "", mail_host, global_domain)
        ]
        if not wanted:
            return {}
        pool = ThreadPoolExecutor(max_workers=min(len(wanted), MAX_LOOKUPS_AT_ONCE))
        try:
            lookups = [pool.submit(self.resolver.lookup, w.name, w.rtype) for _, w in wanted]
            futures.wait(lookups, timeout=budget)
        finally:
            # Lookups still running end by their own lifetime; nobody waits for them.
            pool.shutdown(wait=False, cancel_futures=True)
        result: dict[str, builtins.list[dict[str, object]]] = {}
        for (name, want), lookup in zip(wanted, lookups, strict=True):
            found = _answer(lookup)
            result.setdefault(name, []).append(
                {
                    "type": want.rtype,
                    "name": want.name,
                    "value": want.value,
                    "purpose": want.purpose,
                    "now": found,
                    "ok": found is not None and want.satisfied_by(builtins.list(found)),
                }
            )
        return result

    def remove(self, account: str, text: str) -> None:
        domain = self.owned(account, text)
        with self.db.session() as s:
            used = (
                s.execute(
                    select(func.count()).select_from(Mailbox).where(Mailbox.domain_id == domain.id)
                ).scalar_one()
                + s.execute(
                    select(func.count()).select_from(Alias).where(Alias.domain_id == domain.id)
                ).scalar_one()
            )
            if used:
                raise rule_violated(
                    "Remove the domain's mailboxes and aliases first.", "domain_in_use"
                )
            row = s.get(Domain, domain.id)
            if row is not None:
                s.delete(row)

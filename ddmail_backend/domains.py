"""Global domains (operator-managed) and account domains (owned after DNS proof)."""

from __future__ import annotations

import builtins
import logging
import secrets
import time
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ddmail_backend.dnscheck import (
    DnsUnavailable,
    Resolver,
    expected_records,
    has_verification_token,
)
from ddmail_backend.models import ACCOUNT, GLOBAL, Alias, Domain, DomainClaim, Mailbox
from ddmail_common.db import Database
from ddmail_common.errors import ApiError, conflict, not_found, rule_violated, unavailable
from ddmail_common.validators import InvalidInput, normalize_domain

log = logging.getLogger(__name__)

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


# Senders fetch a domain's MTA-STS policy from https://mta-sts.<domain>/ (RFC 8461 section 3.3).
MTA_STS_LABEL = "mta-sts"

# A claim not verified within this many days is dropped (the name is free again for others).
CLAIM_DAYS = 7
MAX_CLAIMS_PER_ACCOUNT = 20  # pending claims at once: a flood cannot grow the table unbounded
# Every held account domain is re-verified this often; a suspended one more often, so that a
# fixed record restores it soon.
RECHECK_SECONDS = 24 * 3600
RECHECK_SUSPENDED_SECONDS = 3600
RECHECKS_PER_RUN = 50
MAINTENANCE_EVERY = 60.0  # seconds between runs of the job loop's domain maintenance

ACTIVE = "active"  # held and verified: mail flows
SUSPENDED = "suspended"  # held, but the last check did not find the record: no mail flows
PENDING = "pending"  # a claim, not verified yet
SUPERSEDED = "superseded"  # a claim another account verified first


@dataclass(frozen=True)
class DomainView:
    name: str
    kind: str
    enabled: bool
    verified: bool
    token: str | None
    state: str = ACTIVE
    since: int | None = None  # suspended or superseded since; None otherwise
    expires_at: int | None = None  # claims only

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "enabled": self.enabled,
            "verified": self.verified,
            "token": self.token,
            "state": self.state,
            "since": self.since,
            "expires_at": self.expires_at,
        }


def _view(d: Domain) -> DomainView:
    if d.kind == ACCOUNT and not d.enabled:
        return DomainView(d.name, d.kind, False, True, d.token, SUSPENDED, d.suspended_at)
    return DomainView(d.name, d.kind, d.enabled, d.verified, d.token)


def _claim_view(c: DomainClaim) -> DomainView:
    state = PENDING if c.superseded_at is None else SUPERSEDED
    expires = c.created_at + CLAIM_DAYS * 86400
    return DomainView(c.name, ACCOUNT, False, False, c.token, state, c.superseded_at, expires)


def _suspend_or_restore(row: Domain, ok: bool, now: int) -> str | None:
    """Apply one DNS check's outcome to a held account domain; the event, if its state changed."""
    row.checked_at = now
    if ok and not row.enabled:
        row.restored_at, row.enabled = now, True
        return "domain_restored"
    if not ok and row.enabled:
        row.suspended_at, row.enabled = now, False
        return "domain_suspended"
    return None


class Domains:
    def __init__(
        self, db: Database, resolver: Resolver, protected: builtins.list[str] | None = None
    ) -> None:
        self.db = db
        self.resolver = resolver
        # Names no account may claim, nor any name under them: the service's own (the global
        # domain, the mail host); every global domain in the table is protected too.
        self.protected = [parse_domain(p) for p in protected or []]
        self._last_maintenance = 0.0

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
            # Accounts' claims on it, or under it, can never be verified now.
            s.execute(
                delete(DomainClaim).where(
                    or_(DomainClaim.name == name, DomainClaim.name.endswith("." + name))
                )
            )
        return _view(domain)

    def ensure_global(self, text: str) -> bool:
        """The config's global domain exists (added at the backend's start, so a fresh
        deployment takes mail for it); True if it was added now. Its state is never changed
        here: an operator may have disabled it."""
        try:
            self.add_global(text)
        except ApiError as exc:
            if exc.status != 409:
                raise
            return False
        return True

    def list(self, kind: str | None = None, account: str | None = None) -> list[DomainView]:
        query = select(Domain).order_by(Domain.name)
        if kind is not None:
            query = query.where(Domain.kind == kind)
        if account is not None:
            query = query.where(Domain.account == account)
        with self.db.session() as s:
            views = [_view(d) for d in s.execute(query).scalars()]
            if account is not None and kind in (None, ACCOUNT):
                claims = select(DomainClaim).where(DomainClaim.account == account)
                views += [_claim_view(c) for c in s.execute(claims).scalars()]
        return sorted(views, key=lambda v: v.name)

    def mta_sts_hosts(self) -> builtins.list[str]:
        """The policy host `mta-sts.<domain>` of every domain we hold (global, or verified:
        a claim is nobody's yet), for the certificate job. A suspended or disabled domain keeps
        its certificate, served or not (serves_mta_sts): a suspension lasting an hour must not
        cost a new certificate, and ACME CAs limit how often one name gets one."""
        with self.db.session() as s:
            names = s.execute(select(Domain.name).where(Domain.verified))
            return sorted(f"{MTA_STS_LABEL}.{name}" for name in names.scalars())

    def serves_mta_sts(self, host: str) -> bool:
        """Whether HOST is one of mta_sts_hosts()."""
        label, _, name = host.lower().partition(".")
        if label != MTA_STS_LABEL:
            return False
        with self.db.session() as s:
            found = s.execute(
                select(Domain.id).where(Domain.name == name, Domain.enabled, Domain.verified)
            ).first()
        return found is not None

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

    def _refuse_protected(self, s: Session, name: str) -> None:
        globals_ = builtins.list(
            s.execute(select(Domain.name).where(Domain.kind == GLOBAL)).scalars()
        )
        for own in {*self.protected, *globals_}:
            if name == own or name.endswith("." + own):
                raise rule_violated(
                    f"{name} belongs to this service and cannot be added as your own domain.",
                    "domain_reserved",
                )

    def add_account_domain(self, account: str, text: str) -> DomainView:
        """File a claim. Other accounts may hold claims on the same name at the same time: the
        first to publish its token and verify gets the domain (no squatting by claiming)."""
        name = parse_domain(text)
        with self.db.session() as s:
            self._refuse_protected(s, name)
            if s.execute(select(Domain.id).where(Domain.name == name)).first() is not None:
                # Same answer whether another account has it or this one: no ownership leak.
                raise conflict("This domain is already in use.", "domain_exists")
            mine = select(DomainClaim).where(DomainClaim.account == account)
            claims = builtins.list(s.execute(mine).scalars())
            if any(c.name == name for c in claims):
                raise conflict("You have added this domain already.", "domain_exists")
            if len(claims) >= MAX_CLAIMS_PER_ACCOUNT:
                raise rule_violated(
                    "Too many domains are waiting for verification; verify or remove some first.",
                    "too_many_claims",
                )
            claim = DomainClaim(
                name=name,
                account=account,
                token=secrets.token_urlsafe(24),
                created_at=int(time.time()),
                superseded_at=None,
            )
            s.add(claim)
        return _claim_view(claim)

    def owned(self, account: str, text: str) -> Domain:
        name = parse_domain(text)
        with self.db.session() as s:
            domain = s.execute(
                select(Domain).where(Domain.name == name, Domain.account == account)
            ).scalar()
        if domain is None:
            raise not_found("No such domain in this account.")
        return domain

    def _claim(self, account: str, name: str) -> DomainClaim | None:
        with self.db.session() as s:
            return s.execute(
                select(DomainClaim).where(DomainClaim.name == name, DomainClaim.account == account)
            ).scalar()

    def _has_token(self, name: str, token: str) -> bool:
        try:
            return has_verification_token(self.resolver, name, token)
        except DnsUnavailable:
            raise unavailable("DNS could not be asked right now; try again later.") from None

    def verify(self, account: str, text: str) -> DomainView:
        """Check the DNS proof now. A held domain is suspended or restored by the outcome; a
        claim that proves ownership becomes the account's domain and every other claim on the
        name is superseded."""
        name = parse_domain(text)
        claim = self._claim(account, name)
        if claim is None:
            held = self.owned(account, name)
            assert held.token is not None
            ok = self._has_token(name, held.token)
            with self.db.session() as s:
                row = s.get(Domain, held.id)
                if row is None:
                    raise not_found("No such domain in this account.")
                _suspend_or_restore(row, ok, int(time.time()))
                return _view(row)
        if claim.superseded_at is not None:
            raise conflict(
                "Another account proved ownership of this domain first; remove this claim.",
                "domain_exists",
            )
        if not self._has_token(name, claim.token):
            return _claim_view(claim)
        now = int(time.time())
        try:
            with self.db.session() as s:
                s.add(
                    Domain(
                        name=name,
                        kind=ACCOUNT,
                        account=account,
                        enabled=True,
                        verified=True,
                        token=claim.token,
                        created_at=now,
                        checked_at=now,
                    )
                )
                s.execute(delete(DomainClaim).where(DomainClaim.id == claim.id))
                s.execute(
                    update(DomainClaim)
                    .where(DomainClaim.name == name, DomainClaim.superseded_at.is_(None))
                    .values(superseded_at=now)
                )
        except IntegrityError:
            # The unique name: another account's verification committed first.
            raise conflict("This domain is already in use.", "domain_exists") from None
        return self.list_one(account, name)

    def list_one(self, account: str, name: str) -> DomainView:
        return _view(self.owned(account, name))

    def maintain(self, now: int | None = None) -> dict[str, int]:
        """The job loop's domain work: drop expired claims, re-verify held account domains
        that are due (suspend on a definite failure, restore on success; a DNS outage changes
        nothing)."""
        now = int(time.time()) if now is None else now
        with self.db.session() as s:
            expired = s.execute(
                delete(DomainClaim).where(DomainClaim.created_at < now - CLAIM_DAYS * 86400)
            )
            due = builtins.list(
                s.execute(
                    select(Domain.id, Domain.name, Domain.token)
                    .where(
                        Domain.kind == ACCOUNT,
                        or_(
                            Domain.checked_at.is_(None),
                            and_(Domain.enabled, Domain.checked_at < now - RECHECK_SECONDS),
                            and_(
                                Domain.enabled.is_(False),
                                Domain.checked_at < now - RECHECK_SUSPENDED_SECONDS,
                            ),
                        ),
                    )
                    .order_by(Domain.checked_at)
                    .limit(RECHECKS_PER_RUN)
                ).all()
            )
        removed = int(expired.rowcount or 0)  # type: ignore[attr-defined]
        counts = {"claims_expired": removed, "suspended": 0, "restored": 0}
        for domain_id, name, token in due:
            try:
                ok = has_verification_token(self.resolver, name, token or "")
            except DnsUnavailable:
                break  # no answer is not a failure; try again at the next run
            with self.db.session() as s:
                row = s.get(Domain, domain_id)
                event = _suspend_or_restore(row, ok, now) if row is not None else None
            if event == "domain_suspended":
                counts["suspended"] += 1
                log.info("account domain suspended: its verification record is gone")
            elif event == "domain_restored":
                counts["restored"] += 1
        return counts

    def maintain_now_and_then(self) -> dict[str, int] | None:
        """For the job loop (every few seconds): maintain at most once a MAINTENANCE_EVERY."""
        if time.monotonic() - self._last_maintenance < MAINTENANCE_EVERY:
            return None
        self._last_maintenance = time.monotonic()
        return self.maintain()

    def events(self) -> builtins.list[dict[str, object]]:
        """Suspensions, restorations and superseded claims, for the panel's audit trail (the
        panel records each once)."""
        out: builtins.list[dict[str, object]] = []
        with self.db.session() as s:
            for d in s.execute(
                select(Domain).where(
                    Domain.kind == ACCOUNT,
                    or_(Domain.suspended_at.is_not(None), Domain.restored_at.is_not(None)),
                )
            ).scalars():
                if d.suspended_at is not None:
                    out.append(_event(d.account, "domain_suspended", d.name, d.suspended_at))
                if d.restored_at is not None:
                    out.append(_event(d.account, "domain_restored", d.name, d.restored_at))
            for c in s.execute(
                select(DomainClaim).where(DomainClaim.superseded_at.is_not(None))
            ).scalars():
                assert c.superseded_at is not None
                out.append(_event(c.account, "domain_claim_superseded", c.name, c.superseded_at))
        return out

    def records(
        self,
        account: str,
        mail_host: str,
        global_domain: str,
        policy_id: str,
        panel_host: str,
        budget: float = DNS_BUDGET,
    ) -> dict[str, builtins.list[dict[str, object]]]:
        """Every record each of the account's domains needs, next to what DNS has now (None: DNS
        did not answer). All lookups run at once and the answer comes within BUDGET seconds
        whatever DNS does: a page view must not hold a worker for a slow or dead resolver."""
        wanted = [
            (domain.name, want)
            for domain in self.list(account=account)
            if domain.state != SUPERSEDED
            for want in expected_records(
                domain.name, domain.token or "", mail_host, global_domain, policy_id, panel_host
            )
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
        name = parse_domain(text)
        claim = self._claim(account, name)
        if claim is not None:
            with self.db.session() as s:
                s.execute(delete(DomainClaim).where(DomainClaim.id == claim.id))
            return
        domain = self.owned(account, name)
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


def _event(account: str | None, action: str, name: str, at: int) -> dict[str, object]:
    return {"account": account, "action": action, "name": name, "at": at}

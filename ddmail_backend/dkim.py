"""DKIM signing keys: one RSA-2048 key pair per domain, rotated between two selectors (DN 38).

Customer domains publish two CNAMEs once (`ddmN._domainkey.<domain>` -> `ddmN.<domain>.dkim.
<global domain>`); the keys' TXT records live in the provider's zone (`ddmail admin dns zone`),
so a rotation changes only the provider's DNS. A key's life:

  published  in DNS, not signing (the next key)
  active     signing; the selector map names it
  retiring   in DNS, not signing, until its grace period ends; then its row and file go

The private key is written once, as a file rspamd reads (group of the key directory); it never
enters the database, a log or an API answer. Every step is ordered so a crash leaves at worst a
file without a row, which the next maintenance removes.
"""

from __future__ import annotations

import base64
import builtins
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select
from sqlalchemy.orm import Session

from ddmail_backend.dkim_names import SELECTORS, record_name, txt_value
from ddmail_backend.dnscheck import DnsUnavailable, Resolver
from ddmail_backend.models import GLOBAL, DkimKey, Domain
from ddmail_common.config import DkimSettings
from ddmail_common.db import Database
from ddmail_common.errors import conflict, not_found
from ddmail_common.files import create_new
from ddmail_common.utc import utc_text

log = logging.getLogger(__name__)

PUBLISHED = "published"
ACTIVE = "active"
RETIRING = "retiring"
KEY_BITS = 2048
SELECTOR_MAP = "selectors.map"  # "<domain> <selector>" per line: what rspamd signs with


def key_path(key_dir: Path, domain: str, selector: str) -> Path:
    # The same pattern rspamd's dkim_signing `path` uses: $domain.$selector.key.
    return key_dir / f"{domain}.{selector}.key"


def new_key_pair() -> tuple[bytes, str]:
    """(private key PEM, public key as DKIM's p= value: base64 DER SubjectPublicKeyInfo)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, base64.b64encode(der).decode("ascii")


def _write_new(path: Path, data: bytes) -> None:
    """Create PATH afresh, mode 0640 (a leftover of a crash between file and row goes first)."""
    path.unlink(missing_ok=True)
    create_new(path, data, 0o640)


@dataclass(frozen=True)
class KeyView:
    domain: str
    selector: str
    state: str
    record: str  # the TXT record's name
    value: str  # the TXT record's value
    created_at: int
    active_at: int | None
    retire_at: int | None
    switch_after: int | None  # published keys: the earliest switch (DNS must serve it too)

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


class DkimKeys:
    def __init__(
        self,
        db: Database,
        settings: DkimSettings,
        resolver: Resolver,
        global_domain: str,
        dns_ttl: int,
    ) -> None:
        self.db = db
        self.settings = settings
        self.resolver = resolver
        self.global_domain = global_domain
        self.wait = dns_ttl + settings.switch_margin_seconds
        # The periodic job and API requests (a new domain, a rotation) run in threads of one
        # process: one at a time, so two never make the same domain's key.
        self._lock = threading.RLock()
        self._last_maintenance = float("-inf")

    # -- reading ------------------------------------------------------------------------------
    def _signing_domains(self, s: Session) -> dict[str, bool]:
        """Domains that sign their mail -> whether each is a global domain: every global domain
        and every verified customer domain (suspended ones keep their keys)."""
        rows = s.execute(select(Domain.name, Domain.kind, Domain.verified)).all()
        return {name: kind == GLOBAL for name, kind, verified in rows if kind == GLOBAL or verified}

    def _view(self, key: DkimKey, is_global: bool) -> KeyView:
        return KeyView(
            domain=key.domain,
            selector=key.selector,
            state=key.state,
            record=record_name(key.domain, key.selector, self.global_domain, is_global),
            value=txt_value(key.public_key),
            created_at=key.created_at,
            active_at=key.active_at,
            retire_at=key.retire_at,
            switch_after=key.created_at + self.wait if key.state == PUBLISHED else None,
        )

    def list(self, domain: str | None = None) -> builtins.list[KeyView]:
        with self.db.session() as s:
            kinds = self._signing_domains(s)
            query = select(DkimKey).order_by(DkimKey.domain, DkimKey.selector)
            if domain is not None:
                query = query.where(DkimKey.domain == domain)
            return [self._view(k, kinds.get(k.domain, False)) for k in s.scalars(query)]

    # -- operator ------------------------------------------------------------------------------
    def rotate(self, domain: str | None = None, now: int | None = None) -> builtins.list[KeyView]:
        """Publish the next key of DOMAIN (or of every signing domain); the switch follows in
        `maintain` once DNS serves it and the wait has passed."""
        now = int(time.time()) if now is None else now
        with self._lock:
            return self._rotate(domain, now)

    def _rotate(self, domain: str | None, now: int) -> builtins.list[KeyView]:
        self._maintain(now)
        with self.db.session() as s:
            names = sorted(self._signing_domains(s))
        if domain is not None:
            if domain not in names:
                raise not_found(f"{domain} is not a domain that signs its mail.")
            names = [domain]
        started = [self._start_rotation(name, now, strict=domain is not None) for name in names]
        self._write_selector_map()
        return [view for view in started if view is not None]

    def _start_rotation(self, domain: str, now: int, strict: bool) -> KeyView | None:
        with self.db.session() as s:
            keys = {k.state: k for k in s.scalars(select(DkimKey).where(DkimKey.domain == domain))}
        problem = None
        if PUBLISHED in keys:
            problem = f"a rotation of {domain} is under way already (see `ddmail admin dkim list`)"
        elif RETIRING in keys:
            problem = (
                f"the previous key of {domain} is in its grace period until "
                f"{utc_text(keys[RETIRING].retire_at)}; rotate after that"
            )
        elif ACTIVE not in keys:
            problem = f"{domain} has no active key yet"
        if problem is not None:
            if strict:
                raise conflict(problem + ".")
            return None
        selector = _other(keys[ACTIVE].selector)
        self._create(domain, selector, PUBLISHED, now)
        log.info("dkim: published the next key of %s (selector %s)", domain, selector)
        return next(v for v in self.list(domain) if v.state == PUBLISHED)

    # -- the periodic job ----------------------------------------------------------------------
    def maintain(self, now: int | None = None) -> dict[str, int]:
        """Give new signing domains a key, switch when due, retire after the grace period,
        start scheduled rotations, drop keys of domains that are gone, keep files and the
        selector map in step with the rows. Idempotent; each step is its own transaction."""
        now = int(time.time()) if now is None else now
        with self._lock:
            self._last_maintenance = time.monotonic()
            return self._maintain(now)

    def maintain_now_and_then(self) -> dict[str, int] | None:
        """For the job loop (every few seconds): maintain once a maintain_every_seconds."""
        if time.monotonic() - self._last_maintenance < self.settings.maintain_every_seconds:
            return None
        return self.maintain()

    def _maintain(self, now: int) -> dict[str, int]:
        done = {"created": 0, "switched": 0, "retired": 0, "rotated": 0, "removed": 0}
        with self.db.session() as s:
            kinds = self._signing_domains(s)
            keys = list(s.scalars(select(DkimKey)))
        # A row whose file is gone (a restore without the key directory, a disk error) could
        # never sign: drop it, so the domain gets a new key below.
        lost = [
            k for k in keys if not key_path(self.settings.key_dir, k.domain, k.selector).exists()
        ]
        if lost:
            log.warning("dkim: %d key file(s) missing; making new keys", len(lost))
            self._delete(lost)
            keys = [k for k in keys if k not in lost]
        by_domain: dict[str, builtins.list[DkimKey]] = {}
        for key in keys:
            by_domain.setdefault(key.domain, []).append(key)
        for domain, own in by_domain.items():
            if domain not in kinds:
                done["removed"] += self._delete(own)
        for domain, is_global in kinds.items():
            own = by_domain.get(domain, [])
            if not own:
                self._create(domain, SELECTORS[0], ACTIVE, now)
                done["created"] += 1
                continue
            states = {k.state: k for k in own}
            retiring = states.get(RETIRING)
            if retiring is not None and (retiring.retire_at or 0) <= now:
                done["retired"] += self._delete([retiring])
            published = states.get(PUBLISHED)
            if published is not None and self._may_switch(published, is_global, now):
                self._switch(domain, now)
                done["switched"] += 1
            active = states.get(ACTIVE)
            if (
                self.settings.rotate_days
                and published is None
                and retiring is None
                and active is not None
                and (active.active_at or 0) + self.settings.rotate_days * 86400 <= now
            ):
                self._create(domain, _other(active.selector), PUBLISHED, now)
                done["rotated"] += 1
        self._sweep_files()
        self._write_selector_map()
        if any(done.values()):
            log.info("dkim: %s", ", ".join(f"{k} {v}" for k, v in done.items() if v))
        return done

    def _may_switch(self, key: DkimKey, is_global: bool, now: int) -> bool:
        if now < key.created_at + self.wait:
            return False
        if not self.settings.check_dns:
            return True
        name = record_name(key.domain, key.selector, self.global_domain, is_global)
        try:
            served = self.resolver.txt(name)
        except DnsUnavailable:
            return False
        expected = f"p={key.public_key}"
        return any(expected in record.replace(" ", "") for record in served)

    def _switch(self, domain: str, now: int) -> None:
        """The next key signs from now; the old one stays published for the grace period. The
        map is rewritten after the commit: rspamd never names a key whose row says otherwise."""
        with self.db.session() as s:
            for key in s.scalars(select(DkimKey).where(DkimKey.domain == domain)):
                if key.state == ACTIVE:
                    key.state = RETIRING
                    key.retire_at = now + self.settings.grace_seconds
                elif key.state == PUBLISHED:
                    key.state = ACTIVE
                    key.active_at = now
        log.info("dkim: %s signs with its next key now", domain)

    def _create(self, domain: str, selector: str, state: str, now: int) -> None:
        """File first, then the row; if the row cannot be written the file is removed."""
        pem, public = new_key_pair()
        path = key_path(self.settings.key_dir, domain, selector)
        _write_new(path, pem)
        try:
            with self.db.session() as s:
                s.add(
                    DkimKey(
                        domain=domain,
                        selector=selector,
                        state=state,
                        public_key=public,
                        created_at=now,
                        active_at=now if state == ACTIVE else None,
                    )
                )
        except Exception:
            path.unlink(missing_ok=True)
            raise

    def _delete(self, keys: builtins.list[DkimKey]) -> int:
        """Rows first, then files (a file without a row is swept later, never the reverse)."""
        with self.db.session() as s:
            for key in keys:
                row = s.get(DkimKey, key.id)
                if row is not None:
                    s.delete(row)
        for key in keys:
            key_path(self.settings.key_dir, key.domain, key.selector).unlink(missing_ok=True)
        return len(keys)

    def _sweep_files(self) -> None:
        """Remove key files no row names (left by a crash or a removed domain)."""
        with self.db.session() as s:
            wanted = {
                key_path(self.settings.key_dir, d, sel).name
                for d, sel in s.execute(select(DkimKey.domain, DkimKey.selector))
            }
        for path in self.settings.key_dir.glob("*.key"):
            if path.name not in wanted:
                path.unlink(missing_ok=True)

    def _write_selector_map(self) -> None:
        """Rewritten whole and renamed into place: rspamd sees the old map or the new one."""
        with self.db.session() as s:
            active = s.execute(
                select(DkimKey.domain, DkimKey.selector)
                .where(DkimKey.state == ACTIVE)
                .order_by(DkimKey.domain)
            ).all()
        text = "".join(f"{domain} {selector}\n" for domain, selector in active).encode()
        target = self.settings.key_dir / SELECTOR_MAP
        if target.exists() and target.read_bytes() == text:
            return
        tmp = target.with_name(SELECTOR_MAP + ".new")
        _write_new(tmp, text)
        os.replace(tmp, target)


def _other(selector: str) -> str:
    return SELECTORS[1] if selector == SELECTORS[0] else SELECTORS[0]

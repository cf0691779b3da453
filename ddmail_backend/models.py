"""Tables the backend owns: domains, mailboxes, aliases, tombstones and jobs."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ddmail_common.db import Base
from ddmail_common.idempotency import idempotency_table

GLOBAL = "global"
ACCOUNT = "account"
PENDING = "pending"
ACTIVE = "active"
DELETING = "deleting"


class Domain(Base):
    __tablename__ = "backend_domains"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    account: Mapped[str | None] = mapped_column(String(64), index=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    token: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(Integer)
    # An account domain is re-verified periodically: a failed check suspends it (enabled=False,
    # suspended_at set), a later success restores it (enabled=True, restored_at set). Both
    # times stay, so the panel can audit each change even if it looks only after both.
    checked_at: Mapped[int | None] = mapped_column(Integer)
    suspended_at: Mapped[int | None] = mapped_column(Integer)
    restored_at: Mapped[int | None] = mapped_column(Integer)


class DomainClaim(Base):
    """An account's not yet verified claim to a domain. Several accounts may claim one name;
    the first to prove it in DNS gets the domain, the other claims are marked superseded. Every
    claim expires after CLAIM_DAYS."""

    __tablename__ = "backend_domain_claims"
    __table_args__ = (UniqueConstraint("name", "account", name="uq_backend_domain_claims"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(253), index=True)
    account: Mapped[str] = mapped_column(String(64), index=True)
    token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(Integer)
    superseded_at: Mapped[int | None] = mapped_column(Integer)


class OperatorRoute(Base):
    """An operator address (validators.OPERATOR_LOCAL_PARTS) and where its mail goes; rewritten
    from the config at every backend start. The view mail_operator_aliases joins it with the
    domains for Postfix."""

    __tablename__ = "backend_operator_routes"

    local_part: Mapped[str] = mapped_column(String(64), primary_key=True)
    destination: Mapped[str] = mapped_column(String(254))
    every_domain: Mapped[bool] = mapped_column(Boolean)


class Mailbox(Base):
    __tablename__ = "backend_mailboxes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account: Mapped[str] = mapped_column(String(64), index=True)
    address: Mapped[str] = mapped_column(String(254), unique=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("backend_domains.id"))
    state: Mapped[str] = mapped_column(String(16))
    public_key: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[int] = mapped_column(Integer)

    domain: Mapped[Domain] = relationship()


class Alias(Base):
    __tablename__ = "backend_aliases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(String(64), index=True)
    address: Mapped[str] = mapped_column(String(254), unique=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("backend_domains.id"))
    created_at: Mapped[int] = mapped_column(Integer)

    destinations: Mapped[list[AliasDestination]] = relationship(
        cascade="all, delete-orphan", order_by="AliasDestination.destination"
    )


class AliasDestination(Base):
    __tablename__ = "backend_alias_destinations"

    alias_id: Mapped[int] = mapped_column(
        ForeignKey("backend_aliases.id", ondelete="CASCADE"), primary_key=True
    )
    destination: Mapped[str] = mapped_column(String(254), primary_key=True)


class Tombstone(Base):
    """An address that existed once; it can never be created again (no mail to a new owner)."""

    __tablename__ = "backend_tombstones"

    address: Mapped[str] = mapped_column(String(254), primary_key=True)
    removed_at: Mapped[int] = mapped_column(Integer)


class DkimKey(Base):
    """A domain's DKIM key pair: the public half and its life (published -> active -> retiring,
    then deleted). The private half is a file in DkimSettings.key_dir, never a column."""

    __tablename__ = "backend_dkim_keys"
    __table_args__ = (UniqueConstraint("domain", "selector", name="uq_backend_dkim_keys"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain: Mapped[str] = mapped_column(String(253), index=True)
    selector: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    public_key: Mapped[str] = mapped_column(Text)  # base64 DER SubjectPublicKeyInfo (p=)
    created_at: Mapped[int] = mapped_column(Integer)  # published in DNS from then on
    active_at: Mapped[int | None] = mapped_column(Integer)
    retire_at: Mapped[int | None] = mapped_column(Integer)  # set at the switch


class Job(Base):
    __tablename__ = "backend_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_run_at: Mapped[int] = mapped_column(Integer, index=True)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(String(500))


idempotency = idempotency_table("backend", Base.metadata)


class AccountState(Base):
    """Whether an account's addresses receive and send mail (the panel disables unpaid ones).
    An account without a row is enabled."""

    __tablename__ = "backend_accounts"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)


class TlsReport(Base):
    """One policy of an SMTP TLS report (RFC 8460) for a domain we host, as summarised by
    ddmail_common.tlsrpt: no address of any host, only counts, result types and MX names."""

    __tablename__ = "backend_tls_reports"
    __table_args__ = (
        UniqueConstraint(
            "organization",
            "report_id",
            "policy_domain",
            "policy_type",
            name="uq_backend_tls_reports",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization: Mapped[str] = mapped_column(String(200))
    report_id: Mapped[str] = mapped_column(String(200))
    policy_domain: Mapped[str] = mapped_column(String(253), index=True)
    policy_type: Mapped[str] = mapped_column(String(16))
    start_at: Mapped[int] = mapped_column(Integer)
    end_at: Mapped[int] = mapped_column(Integer)
    successful: Mapped[int] = mapped_column(BigInteger)
    failed: Mapped[int] = mapped_column(BigInteger)
    # JSON: [[result type, receiving MX host name or "", sessions], ...]
    failures: Mapped[str] = mapped_column(Text)
    received_at: Mapped[int] = mapped_column(Integer, index=True)

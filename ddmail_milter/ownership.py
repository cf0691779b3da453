"""Which addresses a SASL login may send as: the same view and rule as Postfix's
smtpd_sender_login_maps (``mail_senders``: the mailbox itself and every alias of its account,
only while the account is enabled), read with the mail daemons' read-only access."""

from __future__ import annotations

from sqlalchemy import text

from ddmail_common.db import make_engine


class LookupFailed(Exception):
    """The database could not answer; the message must be deferred, never let through."""


class SenderOwnership:
    def __init__(self, db_url: str) -> None:
        self.engine = make_engine(db_url)

    def owns(self, login: str, address: str) -> bool:
        """True if LOGIN (stored form) may send as ADDRESS (stored form)."""
        try:
            with self.engine.connect() as conn:
                row = conn.execute(
                    text("SELECT 1 FROM mail_senders WHERE sender = :sender AND login = :login"),
                    {"sender": address, "login": login},
                ).first()
        except Exception as exc:
            raise LookupFailed(type(exc).__name__) from None
        return row is not None

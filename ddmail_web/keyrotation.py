"""`ddmail admin keys rotate-master`: a new master key, and every sealed secret re-wrapped.

The old key stays in the file (so a panel still running with it loaded keeps working) until the
operator removes its line; only the small data keys are re-encrypted, never the secrets' text.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from ddmail_common.config import Config
from ddmail_web import envelope
from ddmail_web.models import User
from ddmail_web.state import panel_database
from ddmail_web.totp_views import context


def rotate_master(cfg: Config, db_identity: Callable[[], None] = lambda: None) -> tuple[str, int]:
    """Return the new key id and how many secrets were re-wrapped. DB_IDENTITY runs between
    the file's rotation and the database work (an operator's command drops root there)."""
    path = cfg.web.master_keys
    if path is None:
        raise envelope.KeyFileError("web.master_keys is not set in the config")
    new_id = envelope.MasterKeys.rotate_file(path)
    db_identity()
    keys = envelope.MasterKeys.load(path)
    db = panel_database(cfg)
    count = 0
    with db.session() as s:
        for user in s.execute(select(User).where(User.totp_sealed.is_not(None))).scalars():
            sealed = envelope.Sealed.from_bytes(user.totp_sealed or b"")
            if sealed.key_id != new_id:
                user.totp_sealed = envelope.rewrap(keys, sealed, context(user.id)).to_bytes()
                count += 1
    db.engine.dispose()
    return new_id, count

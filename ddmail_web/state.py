"""What the panel's views share: its database, settings, the backend client and hashers."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from ddmail_common.client import ServiceClient
from ddmail_common.config import Config, WebSettings
from ddmail_common.db import Database
from ddmail_web.audit import audit_key
from ddmail_web.credentials import Passwords
from ddmail_web.envelope import MasterKeys


@dataclass
class WebState:
    db: Database
    settings: WebSettings
    backend: ServiceClient
    passwords: Passwords

    def master_keys(self) -> MasterKeys | None:
        """Loaded on use, so a rotated key file is picked up without a restart."""
        path = self.settings.master_keys
        return MasterKeys.load(path) if path is not None else None


def web() -> WebState:
    state: WebState = current_app.extensions["ddmail_web"]
    return state


def panel_database(cfg: Config) -> Database:
    """The panel's database handle: its sessions carry the audit trail's key."""
    return Database(cfg.db_url, session_info={"audit_key": audit_key(cfg.secret("audit"))})

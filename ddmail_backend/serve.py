"""`ddmail-backend --config FILE`: the backend under gunicorn."""

from __future__ import annotations

from ddmail_backend.app import create_app
from ddmail_common.config import Config
from ddmail_common.serve import main_for


def binds(cfg: Config) -> list[str]:
    return [f"unix:{cfg.backend_socket}"]


def main() -> None:
    main_for(create_app, binds)

"""`ddmail-keyhandler --config FILE`: the keyhandler under gunicorn."""

from __future__ import annotations

from ddmail_common.config import Config
from ddmail_common.serve import main_for
from ddmail_keyhandler.app import create_app


def binds(cfg: Config) -> list[str]:
    host, port = cfg.unlock_listen
    return [f"unix:{cfg.keyhandler_socket}", f"{host}:{port}"]


def main() -> None:
    main_for(create_app, binds)

"""Backend and keyhandler apps served in-process on unix sockets (werkzeug), for fast tests."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import create_engine, text
from werkzeug.serving import make_server

from ddmail_backend.app import create_app as backend_app
from ddmail_backend.dnscheck import FakeResolver
from ddmail_common.client import ServiceClient
from ddmail_common.config import Config, parse
from ddmail_common.migrate import upgrade
from ddmail_web.envelope import MasterKeys

CHEAP_ARGON2 = {"argon2_memory_kib": 64, "argon2_time_cost": 1}


def write_config(
    root: Path, db_url: str, extra: dict[str, dict[str, object]] | None = None
) -> Config:
    secrets = {}
    for name in ("web", "admin", "backend", "dovecot", "audit", "tlsrpt"):
        path = root / f"{name}.key"
        path.write_text(name * 16 + "-0123456789abcdef\n")
        path.chmod(0o600)
        secrets[name] = str(path)
    extra = extra or {}
    (root / "dkim").mkdir(exist_ok=True)
    master = root / "master.keys"
    if not master.exists():
        MasterKeys.generate_file(master)
    return parse(
        {
            "database": {"url": db_url},
            "backend": {
                "socket": str(root / "b.sock"),
                "mail_root": str(root / "mail"),
                "operator_address": "operator@ops.example",
                **extra.get("backend", {}),
            },
            "keyhandler": {
                "socket": str(root / "k.sock"),
                "unlock_listen": "127.0.0.1:1",
                **CHEAP_ARGON2,
            },
            "secrets": secrets,
            "web": {
                "new_accounts_enabled": True,
                "master_keys": str(master),
                **CHEAP_ARGON2,
                **extra.get("web", {}),
            },
            "public": extra.get("public", {}),
            "dkim": {"key_dir": str(root / "dkim"), **extra.get("dkim", {})},
        }
    )


@dataclass
class Services:
    cfg: Config
    resolver: FakeResolver
    web: ServiceClient
    admin: ServiceClient
    keyhandler_server: object

    def stop_keyhandler(self) -> None:
        self.keyhandler_server.shutdown()  # type: ignore[attr-defined]


class _Server(threading.Thread):
    def __init__(self, app: object, sock: Path) -> None:
        super().__init__(daemon=True)
        sock.unlink(missing_ok=True)
        self.server = make_server(f"unix://{sock}", 0, app, threaded=True)  # type: ignore[arg-type]

    def run(self) -> None:
        self.server.serve_forever(poll_interval=0.05)

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def restart_keyhandler(services: Services) -> None:
    from ddmail_keyhandler.app import create_app as keyhandler_app

    server = _Server(keyhandler_app(services.cfg), services.cfg.keyhandler_socket)
    server.start()
    services.keyhandler_server = server


@contextmanager
def running_services(root: Path, db_url: str | None = None) -> Iterator[Services]:
    from ddmail_keyhandler.app import create_app as keyhandler_app

    db_url = db_url or f"sqlite:///{root / 'test.sqlite3'}"
    upgrade(db_url)
    cfg = write_config(root, db_url)
    resolver = FakeResolver()
    kh = _Server(keyhandler_app(cfg), cfg.keyhandler_socket)
    be = _Server(backend_app(cfg, resolver=resolver, run_jobs=False), cfg.backend_socket)
    kh.start()
    be.start()
    try:
        services = Services(
            cfg,
            resolver,
            ServiceClient("web", cfg.secret("web"), cfg.backend_socket, "backend"),
            ServiceClient("admin", cfg.secret("admin"), cfg.backend_socket, "backend"),
            kh,
        )
        yield services
    finally:
        be.shutdown()
        with contextlib.suppress(Exception):  # a test may have stopped it already
            kh.shutdown()
        with contextlib.suppress(Exception):
            cast(_Server, services.keyhandler_server).shutdown()


def db_rows(svc: Services, query: str, **params: Any) -> list[tuple[Any, ...]]:
    """The rows of QUERY on the services' database, read outside any app's pool."""
    engine = create_engine(svc.cfg.db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(query), params)]
    finally:
        engine.dispose()


def db_run(svc: Services, statement: str, **params: Any) -> None:
    """Run STATEMENT on the services' database and commit it."""
    engine = create_engine(svc.cfg.db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement), params)
    finally:
        engine.dispose()

"""Every service started on an SQLite config says once that SQLite is for trials and tests."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ddmail_common import serve, socket_daemon
from ddmail_common.config import SQLITE_TRIAL_WARNING


def write_config(tmp_path: Path, db_url: str) -> Path:
    secret = tmp_path / "web.key"
    secret.write_text("s" * 40)
    secret.chmod(0o600)
    path = tmp_path / "ddmail.toml"
    path.write_text(
        f'[database]\nurl = "{db_url}"\n'
        '[backend]\nsocket = "/run/b.sock"\nmail_root = "/var/mail"\n'
        'operator_address = "operator@ops.example"\n'
        '[keyhandler]\nsocket = "/run/k.sock"\nunlock_listen = "127.0.0.1:10080"\n'
        f'[secrets]\nweb = "{secret}"\n'
    )
    return path


def start_web(monkeypatch: pytest.MonkeyPatch) -> None:
    from ddmail_web import serve as web_serve

    monkeypatch.setattr(web_serve, "serve", lambda *_, **__: None)
    monkeypatch.setattr(web_serve, "create_app", lambda cfg: None)
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--bind", "unix:/nonexistent/web.sock"])
    web_serve.main()


def start_backend_or_keyhandler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve, "run", lambda build, binds: None)
    serve.main_for(lambda cfg: None, lambda cfg: [])


def start_milter_or_pgpstage(monkeypatch: pytest.MonkeyPatch) -> None:
    socket_daemon.start("a daemon", "milter")


STARTS: list[Callable[[pytest.MonkeyPatch], None]] = [
    start_web,
    start_backend_or_keyhandler,
    start_milter_or_pgpstage,
]


@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize(
    ("db_url", "warnings"),
    [("sqlite:////var/lib/ddmail/sqlite/ddmail.db", 1),
     ("postgresql+psycopg:///ddmail?host=/var/run/postgresql", 0)],
)  # fmt: skip
def test_sqlite_gets_one_warning_at_start(
    start: Callable[[pytest.MonkeyPatch], None],
    db_url: str,
    warnings: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sys, "argv", ["ddmail-x", "--config", str(write_config(tmp_path, db_url))])
    with caplog.at_level(logging.WARNING):
        start(monkeypatch)
    said = [r for r in caplog.records if r.getMessage() == SQLITE_TRIAL_WARNING]
    assert len(said) == warnings
    assert all(r.levelno == logging.WARNING for r in said)

"""Services build their app (and may query) before gunicorn forks the worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import text

from ddmail_common.db import Database
from tests.stackrun import postgres_url

pytestmark = pytest.mark.postgres


def test_a_forked_worker_never_reuses_the_parents_database_connections(tmp_path: Path) -> None:
    # On PostgreSQL a shared connection made the backend fail with "prepared statement
    # already exists" once its worker and the parent both used it.
    db = Database(postgres_url() or f"sqlite:///{tmp_path / 'db.sqlite3'}")
    with db.session() as s:
        s.execute(text("SELECT 1"))
    assert db.engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    pid = os.fork()
    if pid == 0:
        inherited = db.engine.pool.checkedin()  # type: ignore[attr-defined]
        with db.session() as s:
            s.execute(text("SELECT 1"))
        os._exit(0 if inherited == 0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with db.session() as s:  # the parent's own connection still works
        assert s.execute(text("SELECT 1")).scalar() == 1
    db.engine.dispose()

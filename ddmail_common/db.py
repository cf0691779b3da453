"""SQLAlchemy engine and session helpers shared by the services (SQLite WAL or PostgreSQL)."""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker


class Base(DeclarativeBase):
    """All services' models; each service's tables carry its own name as prefix and each
    service imports only its own models, so none reads another's tables."""


URL_CREDENTIAL_REFUSED = (
    "carries a password; secrets never go into a URL (it ends up in argv, configs and error "
    "messages): put the password in a libpq passfile (0600) and add ?passfile=PATH to the URL"
)


def has_inline_password(url: str) -> bool:
    try:
        return make_url(url).password is not None
    except ArgumentError:  # not a URL at all: the engine will say so
        return False


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": 15, "check_same_thread": False},
            hide_parameters=True,  # error messages must never carry a bound secret
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=15000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


def _forget_inherited_connections(ref: weakref.ref[Engine]) -> None:
    engine = ref()
    if engine is not None:
        engine.dispose(close=False)  # the parent's connections stay the parent's


class Database:
    def __init__(self, url: str, session_info: dict[str, object] | None = None) -> None:
        """SESSION_INFO is copied into every session's `info` (what a service's code needs
        alongside its tables, such as the panel's audit key)."""
        self.engine = make_engine(url)
        self._factory = sessionmaker(self.engine, expire_on_commit=False, info=session_info)
        # A service opens connections while its app is built (e.g. the backend's operator
        # routes), then gunicorn forks the worker: parent and child must never share a pooled
        # connection (on PostgreSQL they would trample each other's prepared statements).
        engine = weakref.ref(self.engine)
        os.register_at_fork(after_in_child=lambda: _forget_inherited_connections(engine))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any exception."""
        with self._factory() as session, session.begin():
            yield session

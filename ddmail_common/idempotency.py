"""Idempotency keys for state-changing endpoints.

A retried request with the same key gets the first answer again instead of acting twice. Answers
may hold a secret (a new mailbox password), so they are stored encrypted under a key derived from
the idempotency key itself, which only the caller knows; the row is found by a hash of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import Response, g, request
from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, delete, insert, select
from sqlalchemy.exc import IntegrityError

from ddmail_common.api import json_response
from ddmail_common.db import Database
from ddmail_common.errors import ApiError

RETENTION_SECONDS = 24 * 3600
F = TypeVar("F", bound=Callable[..., Response])


def idempotency_table(prefix: str, metadata: MetaData) -> Table:
    return Table(
        f"{prefix}_idempotency",
        metadata,
        Column("id", String(64), primary_key=True),
        Column("created_at", Integer, nullable=False, index=True),
        Column("sealed", LargeBinary, nullable=False),
    )


def _ids(caller: str, method: str, path: str, key: str) -> tuple[str, bytes]:
    material = hashlib.sha256(f"{caller}\n{method}\n{path}\n{key}".encode()).digest()
    row_id = hashlib.sha256(b"id" + material).hexdigest()
    return row_id, hashlib.sha256(b"enc" + material).digest()


class IdempotencyStore:
    def __init__(self, db: Database, table: Table) -> None:
        self.db = db
        self.table = table

    def replay(self, row_id: str, enc_key: bytes) -> Response | None:
        with self.db.session() as s:
            sealed = s.execute(
                select(self.table.c.sealed).where(self.table.c.id == row_id)
            ).scalar()
        if sealed is None:
            return None
        plain = AESGCM(enc_key).decrypt(sealed[:12], sealed[12:], row_id.encode())
        stored = json.loads(plain)
        return json_response(int(stored["status"]), stored["body"])

    def remember(self, row_id: str, enc_key: bytes, status: int, body: dict[str, Any]) -> None:
        nonce = os.urandom(12)
        plain = json.dumps({"status": status, "body": body}).encode()
        sealed = nonce + AESGCM(enc_key).encrypt(nonce, plain, row_id.encode())
        now = int(time.time())
        with self.db.session() as s:
            s.execute(delete(self.table).where(self.table.c.created_at < now - RETENTION_SECONDS))
            s.execute(insert(self.table).values(id=row_id, created_at=now, sealed=sealed))

    def wrap(self, view: F) -> F:
        """Decorator for views returning (status, body); must run after authentication."""

        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Response:
            key = request.headers.get("Idempotency-Key", "")
            if not key:
                return view(*args, **kwargs)
            if not 8 <= len(key) <= 128 or not key.replace("-", "").isalnum():
                raise ApiError(400, "bad_idempotency_key", "The idempotency key is malformed.")
            row_id, enc_key = _ids(g.caller, request.method, request.path, key)
            previous = self.replay(row_id, enc_key)
            if previous is not None:
                return previous
            response = view(*args, **kwargs)
            # Only definite outcomes are remembered; a 5xx may succeed on a retry.
            if response.status_code < 500:
                body = json.loads(response.get_data() or b"{}")
                # A concurrent twin with the same key may have stored its answer first.
                with contextlib.suppress(IntegrityError):
                    self.remember(row_id, enc_key, response.status_code, body)
            return response

        return wrapper  # type: ignore[return-value]

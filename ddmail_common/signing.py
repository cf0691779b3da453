"""HMAC-SHA256 request signatures between local services (docs/architecture.md §4).

The signature covers method, path (with query), timestamp, nonce and the SHA-256 of the body,
so neither the body nor the target can be changed and a captured request cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

HEADER_CALLER = "X-DDMail-Caller"
HEADER_TIMESTAMP = "X-DDMail-Timestamp"
HEADER_NONCE = "X-DDMail-Nonce"
HEADER_SIGNATURE = "X-DDMail-Signature"
MAX_SKEW_SECONDS = 30


def _message(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((method.upper(), path, timestamp, nonce, digest)).encode()


def sign(
    caller: str, secret: bytes, method: str, path: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """Headers that authenticate one request from CALLER."""
    timestamp = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16)
    mac = hmac.new(secret, _message(method, path, timestamp, nonce, body), hashlib.sha256)
    return {
        HEADER_CALLER: caller,
        HEADER_TIMESTAMP: timestamp,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: mac.hexdigest(),
    }


class SignatureError(Exception):
    """The request is not authentic (401) — the message says why, for the server's own log."""


class NonceCache:
    """Nonces seen within the skew window. One per process; services run a single worker
    process with threads so that every request passes through the same cache."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, nonce: str, now: float) -> bool:
        """Record NONCE; False if it was already used."""
        with self._lock:
            if len(self._seen) > 1000:
                horizon = now - 2 * MAX_SKEW_SECONDS
                self._seen = {n: t for n, t in self._seen.items() if t >= horizon}
            if nonce in self._seen:
                return False
            self._seen[nonce] = now
            return True


@dataclass
class Verifier:
    """Checks signed requests against each known caller's secret."""

    secrets: Mapping[str, bytes]
    nonces: NonceCache

    def verify(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        now: float | None = None,
    ) -> str:
        """Return the authenticated caller's name or raise SignatureError."""
        now = time.time() if now is None else now
        h = {k.lower(): v for k, v in headers.items()}  # HTTP header names are case-insensitive
        caller = h.get(HEADER_CALLER.lower(), "")
        timestamp = h.get(HEADER_TIMESTAMP.lower(), "")
        nonce = h.get(HEADER_NONCE.lower(), "")
        signature = h.get(HEADER_SIGNATURE.lower(), "")
        secret = self.secrets.get(caller)
        if secret is None:
            raise SignatureError("unknown caller")
        if not timestamp.isdigit() or abs(now - int(timestamp)) > MAX_SKEW_SECONDS:
            raise SignatureError("timestamp outside the allowed window")
        if not (16 <= len(nonce) <= 64) or not nonce.isalnum():
            raise SignatureError("malformed nonce")
        expected = hmac.new(
            secret, _message(method, path, timestamp, nonce, body), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise SignatureError("bad signature")
        # Only an authentic request may consume a nonce, so nobody can burn others' nonces.
        if not self.nonces.add(nonce, now):
            raise SignatureError("replayed nonce")
        return caller

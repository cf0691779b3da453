"""The one client every service uses to call another over signed JSON HTTP."""

from __future__ import annotations

import http.client
import json
import socket
import uuid
from pathlib import Path
from typing import Any

from ddmail_common.errors import ApiError
from ddmail_common.signing import sign


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class ServiceClient:
    """Calls SERVICE (a unix socket) as CALLER. Raises ApiError with the server's status and
    message; a service that cannot be reached becomes 503 `unavailable`."""

    def __init__(
        self, caller: str, secret: bytes, socket_path: Path, service: str, timeout: float = 30.0
    ) -> None:
        self.caller = caller
        self._secret = secret
        self.socket_path = socket_path
        self.service = service
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        payload = b"" if body is None else json.dumps(body).encode()
        headers = sign(self.caller, self._secret, method, path, payload)
        headers["Content-Type"] = "application/json"
        if method.upper() != "GET":
            headers["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            conn.connect()
        except OSError:
            # Nothing was sent: the caller knows for certain that nothing happened.
            conn.close()
            raise ApiError(
                503, "unreachable", f"The {self.service} service is not reachable right now."
            ) from None
        try:
            conn.request(method.upper(), path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            raise ApiError(
                503, "unavailable", f"The {self.service} service did not answer in time."
            ) from None
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if resp.status >= 400:
            raise ApiError(
                resp.status,
                str(data.get("error", "error")),
                str(data.get("message", f"The {self.service} service answered {resp.status}.")),
            )
        return data

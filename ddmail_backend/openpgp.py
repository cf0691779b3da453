"""OpenPGP key management for the panel: the keys live in the keyhandler; the backend checks
that a mailbox named in a request is an active mailbox of the account before passing it on."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlencode

from flask import g, request

from ddmail_backend.mailboxes import Mailboxes
from ddmail_common.client import ServiceClient
from ddmail_common.errors import ApiError


def _forwarded_key() -> str | None:
    """An idempotency key for the keyhandler derived from the caller's, so that a retried
    request reaches the keyhandler with the same key and gets its first answer again."""
    key = request.headers.get("Idempotency-Key", "")
    if not key:
        return None
    return hashlib.sha256(f"{g.caller}\n{request.path}\n{key}".encode()).hexdigest()


class OpenPgp:
    def __init__(self, keyhandler: ServiceClient, mailboxes: Mailboxes) -> None:
        self.keyhandler = keyhandler
        self.mailboxes = mailboxes

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.keyhandler.call("POST", path, body, idempotency_key=_forwarded_key())

    def upload(self, account: str, key: str) -> dict[str, Any]:
        return self._post("/v1/openpgp/keys", {"account": account, "key": key})

    def list(self, account: str) -> list[dict[str, Any]]:
        answer = self.keyhandler.call("GET", "/v1/openpgp/keys?" + urlencode({"account": account}))
        return list(answer.get("keys", []))

    def summary(self, account: str) -> dict[str, int] | None:
        """How many keys the account has, how many mailboxes use one and how many of those have
        mail held back; None when the keyhandler does not answer (the settings overview still
        shows everything else)."""
        try:
            keys = self.list(account)
        except ApiError as exc:
            if exc.status != 503:
                raise
            return None
        return {
            "keys": len(keys),
            "mailboxes": sum(len(k["mailboxes"]) for k in keys),
            "held_back": sum(len(k["failures"]) for k in keys),
        }

    def activate(self, account: str, address: str, fingerprint: str) -> dict[str, Any]:
        mailbox = self.mailboxes.owned(account, address)
        return self._post(
            "/v1/openpgp/activate",
            {"account": account, "address": mailbox.address, "fingerprint": fingerprint},
        )

    def deactivate(self, account: str, address: str) -> dict[str, Any]:
        mailbox = self.mailboxes.owned(account, address)
        return self._post(
            "/v1/openpgp/deactivate", {"account": account, "address": mailbox.address}
        )

    def remove(self, account: str, fingerprint: str) -> dict[str, Any]:
        return self._post("/v1/openpgp/remove", {"account": account, "fingerprint": fingerprint})

    def purge(self, account: str) -> dict[str, Any]:
        return self._post("/v1/openpgp/purge", {"account": account})

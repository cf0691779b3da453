"""The keyhandler's API: signed calls from the backend, and the unlock endpoint for Dovecot."""

from __future__ import annotations

import base64
import hmac
import logging

from flask import Flask, Response, request

from ddmail_common.api import MAX_BODY, authenticated, field, json_body, json_response, make_api
from ddmail_common.config import Config
from ddmail_common.db import Database
from ddmail_common.errors import ApiError, bad_request
from ddmail_common.idempotency import IdempotencyStore
from ddmail_common.signing import NonceCache, Verifier
from ddmail_keyhandler.keys import KeyStore
from ddmail_keyhandler.models import idempotency
from ddmail_keyhandler.openpgp_keys import OpenPgpKeys
from ddmail_keyhandler.wkd import published_key

log = logging.getLogger(__name__)
BACKEND = {"backend"}


def _secret_field(data: dict[str, object], name: str) -> str:
    value: str = field(data, name, str, max_len=1024)
    if not value:
        raise bad_request(f"The field '{name}' is empty.")
    return value


def create_app(cfg: Config, db: Database | None = None) -> Flask:
    db = db or Database(cfg.db_url)
    verifier = Verifier({"backend": cfg.secret("backend")}, NonceCache())
    app = make_api("ddmail_keyhandler", verifier)
    keys = KeyStore(db, cfg.argon2)
    idem = IdempotencyStore(db, idempotency)
    unlock_token = cfg.secret("dovecot")

    @app.post("/v1/recovery-keys")
    @authenticated(BACKEND)
    @idem.wrap
    def set_recovery_key() -> Response:
        data = json_body()
        account = field(data, "account", str, 64)
        keys.set_recovery_key(account, _secret_field(data, "secret").encode())
        return json_response(201, {"account": account})

    @app.post("/v1/recovery-keys/remove")
    @authenticated(BACKEND)
    @idem.wrap
    def remove_recovery_key() -> Response:
        account = field(json_body(), "account", str, 64)
        return json_response(
            200, {"account": account, "removed": keys.remove_recovery_key(account)}
        )

    @app.post("/v1/keys")
    @authenticated(BACKEND)
    @idem.wrap
    def create_key() -> Response:
        data = json_body()
        public_key, password = keys.create(
            field(data, "mailbox_id", str, 36),
            field(data, "address", str, 254),
            field(data, "account", str, 64),
        )
        return json_response(201, {"public_key": public_key, "password": password})

    @app.get("/v1/keys/<mailbox_id>")
    @authenticated(BACKEND)
    def get_key(mailbox_id: str) -> Response:
        public_key = keys.public_key(mailbox_id)
        if public_key is None:
            raise ApiError(404, "not_found", "No key for this mailbox.")
        return json_response(200, {"public_key": public_key})

    @app.post("/v1/keys/password")
    @authenticated(BACKEND)
    @idem.wrap
    def change_password() -> Response:
        data = json_body()
        password = keys.change_password(
            field(data, "address", str, 254), _secret_field(data, "current_password")
        )
        return json_response(200, {"password": password})

    @app.post("/v1/keys/reset")
    @authenticated(BACKEND)
    @idem.wrap
    def reset_password() -> Response:
        data = json_body()
        password = keys.reset_password(
            field(data, "address", str, 254), _secret_field(data, "recovery_secret").encode()
        )
        return json_response(200, {"password": password})

    @app.post("/v1/keys/destroy")
    @authenticated(BACKEND)
    @idem.wrap
    def destroy() -> Response:
        destroyed = keys.destroy(field(json_body(), "mailbox_id", str, 36))
        return json_response(200, {"destroyed": destroyed})

    @app.post("/v1/unlock")
    def unlock() -> Response:
        # Dovecot's Lua passdb cannot compute HMACs, so this one endpoint takes a bearer token
        # from a file only Dovecot's auth worker (its own user) can read; it grants nothing else.
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(presented, unlock_token):
            raise ApiError(401, "bad_token", "The request is not authentic.")
        data = json_body()
        user = field(data, "user", str, 254).lower()
        unlocked = keys.unlock(user, field(data, "password", str, 1024))
        return json_response(
            200, {"private_key": unlocked.private_key, "public_key": unlocked.public_key}
        )

    # -- OpenPGP public keys (the backend has checked that the mailbox is the account's) -------
    openpgp = OpenPgpKeys(db)

    @app.post("/v1/openpgp/keys")
    @authenticated(BACKEND)
    @idem.wrap
    def openpgp_upload() -> Response:
        data = json_body()
        account = field(data, "account", str, 64)
        made = openpgp.upload(account, field(data, "key", str, MAX_BODY))
        return json_response(200 if made["updated"] else 201, made)  # updated: same fingerprint

    @app.get("/v1/openpgp/keys")
    @authenticated(BACKEND)
    def openpgp_list() -> Response:
        account = request.args.get("account", "")
        if not account or len(account) > 64:
            raise bad_request("The query parameter 'account' is missing or too long.")
        return json_response(200, {"keys": openpgp.list(account)})

    @app.get("/v1/openpgp/failures")
    @authenticated(BACKEND)
    def openpgp_failures() -> Response:
        return json_response(200, {"failures": openpgp.failures()})

    @app.get("/v1/openpgp/wkd")
    @authenticated(BACKEND)
    def openpgp_wkd() -> Response:
        domain, hashed = request.args.get("domain", ""), request.args.get("hash", "")
        if not (0 < len(domain) <= 253 and len(hashed) == 32 and hashed.isalnum()):
            raise bad_request("Give a domain and a 32-character WKD hash.")
        key = published_key(db, domain.lower(), hashed.lower())
        if key is None:
            raise ApiError(404, "not_found", "No key is published for this address.")
        return json_response(200, {"key": base64.b64encode(key).decode()})

    @app.post("/v1/openpgp/activate")
    @authenticated(BACKEND)
    @idem.wrap
    def openpgp_activate() -> Response:
        data = json_body()
        return json_response(
            200,
            openpgp.activate(
                field(data, "account", str, 64),
                field(data, "address", str, 254),
                field(data, "fingerprint", str, 100),
            ),
        )

    @app.post("/v1/openpgp/deactivate")
    @authenticated(BACKEND)
    @idem.wrap
    def openpgp_deactivate() -> Response:
        data = json_body()
        return json_response(
            200,
            openpgp.deactivate(field(data, "account", str, 64), field(data, "address", str, 254)),
        )

    @app.post("/v1/openpgp/remove")
    @authenticated(BACKEND)
    @idem.wrap
    def openpgp_remove() -> Response:
        data = json_body()
        return json_response(
            200,
            openpgp.remove(field(data, "account", str, 64), field(data, "fingerprint", str, 100)),
        )

    @app.post("/v1/openpgp/purge")
    @authenticated(BACKEND)
    @idem.wrap
    def openpgp_purge() -> Response:
        removed = openpgp.purge_account(field(json_body(), "account", str, 64))
        return json_response(200, {"removed": removed})

    return app

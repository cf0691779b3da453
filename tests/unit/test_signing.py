"""Signed local HTTP: only authentic, fresh, first-time requests from allowed callers pass."""

from __future__ import annotations

import pytest

from ddmail_common.signing import (
    HEADER_CALLER,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    NonceCache,
    SignatureError,
    Verifier,
    sign,
)

SECRET = b"w" * 32
NOW = 1_800_000_000.0


def verifier() -> Verifier:
    return Verifier({"web": SECRET}, NonceCache())


def test_valid_request_is_accepted_and_names_the_caller() -> None:
    headers = sign("web", SECRET, "POST", "/v1/mailboxes", b'{"a":1}', now=NOW)
    assert verifier().verify("POST", "/v1/mailboxes", headers, b'{"a":1}', now=NOW) == "web"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/mailboxes", b'{"a":1}'),
        ("POST", "/v1/aliases", b'{"a":1}'),
        ("POST", "/v1/mailboxes", b'{"a":2}'),
    ],
)
def test_changed_method_path_or_body_is_rejected(method: str, path: str, body: bytes) -> None:
    headers = sign("web", SECRET, "POST", "/v1/mailboxes", b'{"a":1}', now=NOW)
    with pytest.raises(SignatureError, match="bad signature"):
        verifier().verify(method, path, headers, body, now=NOW)


def test_wrong_secret_is_rejected() -> None:
    headers = sign("web", b"x" * 32, "GET", "/v1/x", b"", now=NOW)
    with pytest.raises(SignatureError, match="bad signature"):
        verifier().verify("GET", "/v1/x", headers, b"", now=NOW)


@pytest.mark.parametrize("skew", [-31, 31, 3600])
def test_stale_or_future_timestamp_is_rejected(skew: int) -> None:
    headers = sign("web", SECRET, "GET", "/v1/x", b"", now=NOW + skew)
    with pytest.raises(SignatureError, match="timestamp"):
        verifier().verify("GET", "/v1/x", headers, b"", now=NOW)


def test_timestamp_within_skew_is_accepted() -> None:
    headers = sign("web", SECRET, "GET", "/v1/x", b"", now=NOW - 29)
    assert verifier().verify("GET", "/v1/x", headers, b"", now=NOW) == "web"


def test_replayed_nonce_is_rejected() -> None:
    v = verifier()
    headers = sign("web", SECRET, "GET", "/v1/x", b"", now=NOW)
    v.verify("GET", "/v1/x", headers, b"", now=NOW)
    with pytest.raises(SignatureError, match="replayed"):
        v.verify("GET", "/v1/x", headers, b"", now=NOW + 1)


def test_unknown_caller_is_rejected() -> None:
    headers = sign("mallory", SECRET, "GET", "/v1/x", b"", now=NOW)
    with pytest.raises(SignatureError, match="unknown caller"):
        verifier().verify("GET", "/v1/x", headers, b"", now=NOW)


def test_caller_cannot_claim_another_callers_identity() -> None:
    v = Verifier({"web": SECRET, "admin": b"a" * 32}, NonceCache())
    headers = sign("web", SECRET, "GET", "/v1/x", b"", now=NOW)
    headers[HEADER_CALLER] = "admin"
    with pytest.raises(SignatureError):
        v.verify("GET", "/v1/x", headers, b"", now=NOW)


def test_forged_request_does_not_burn_the_nonce() -> None:
    v = verifier()
    good = sign("web", SECRET, "GET", "/v1/x", b"", now=NOW)
    forged = dict(good, **{HEADER_SIGNATURE: "0" * 64})
    with pytest.raises(SignatureError):
        v.verify("GET", "/v1/x", forged, b"", now=NOW)
    assert v.verify("GET", "/v1/x", good, b"", now=NOW) == "web"


def test_malformed_headers_are_rejected() -> None:
    headers = sign("web", SECRET, "GET", "/v1/x", b"", now=NOW)
    headers[HEADER_TIMESTAMP] = "soon"
    with pytest.raises(SignatureError):
        verifier().verify("GET", "/v1/x", headers, b"", now=NOW)
    with pytest.raises(SignatureError):
        verifier().verify("GET", "/v1/x", {}, b"", now=NOW)

"""Time-based one-time passwords (RFC 6238) as authenticator apps implement them: HMAC-SHA-1,
6 digits, 30-second steps.

``verify`` returns the time step a code matched. The caller stores it and passes it back as
``last_used_step``: a code for that step or an earlier one is refused, so an observed code cannot
be replayed, not even within its own 30 seconds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import secrets
import struct
from urllib.parse import quote, urlencode

import segno

DIGITS = 6
PERIOD = 30
SECRET_BYTES = 20  # 160 bits, the HMAC-SHA-1 block output size RFC 4226 recommends


def new_secret() -> str:
    """A random secret in base32 (32 characters, no padding), as authenticator apps take it."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def _secret_bytes(secret: str) -> bytes:
    # Secrets typed in by hand may come grouped by spaces, in lower case and without padding.
    normalized = secret.replace(" ", "").upper()
    try:
        key = base64.b32decode(normalized + "=" * (-len(normalized) % 8))
    except binascii.Error:
        raise ValueError("the TOTP secret is not valid base32") from None
    if not key:
        raise ValueError("the TOTP secret is empty")
    return key


def _code(key: bytes, step: int) -> str:
    digest = hmac.digest(key, struct.pack(">Q", step), hashlib.sha1)
    offset = digest[-1] & 0x0F  # RFC 4226 dynamic truncation
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**DIGITS).zfill(DIGITS)


def code_at(secret: str, t: int) -> str:
    """The code for unix time T."""
    if t < 0:
        raise ValueError("TOTP time must not be negative")
    return _code(_secret_bytes(secret), t // PERIOD)


def verify(
    secret: str, code: str, now: int, last_used_step: int | None, window: int = 1
) -> int | None:
    """Return the time step CODE is valid for, or None.

    Steps up to WINDOW before and after the current one are accepted, for clocks that drift and
    codes typed in as their step ends. Steps up to LAST_USED_STEP are never accepted. Every
    candidate is compared in constant time and all of them are, so the time taken does not tell
    which step (if any) matched.
    """
    if window < 0:
        raise ValueError("the TOTP window must not be negative")
    key = _secret_bytes(secret)
    code = code.replace(" ", "")
    # isascii() first: isdigit() alone accepts other scripts' digits and superscripts.
    if len(code) != DIGITS or not (code.isascii() and code.isdigit()):
        return None
    current = now // PERIOD
    matched = None
    for step in range(max(current - window, 0), current + window + 1):
        fresh = last_used_step is None or step > last_used_step
        if hmac.compare_digest(_code(key, step), code) and fresh and matched is None:
            matched = step
    return matched


def provisioning_uri(secret: str, account_name: str, issuer: str = "DDMail") -> str:
    """The otpauth:// URI authenticator apps import (Google's Key Uri Format)."""
    if ":" in issuer or ":" in account_name:
        raise ValueError("neither the issuer nor the account name may contain ':'")
    _secret_bytes(secret)  # a broken secret must not end up in an app, where it fails silently
    label = f"{quote(issuer, safe='')}:{quote(account_name, safe='')}"
    params = {
        "secret": secret.replace(" ", "").upper().rstrip("="),
        "issuer": issuer,
        "algorithm": "SHA1",
        "digits": DIGITS,
        "period": PERIOD,
    }
    # quote, not urlencode's default quote_plus: some apps show a "+" literally.
    return f"otpauth://totp/{label}?{urlencode(params, quote_via=quote)}"


def qr_png(uri: str) -> bytes:
    """URI as a QR code in PNG, 5 pixels per module with the standard 4-module quiet zone."""
    out = io.BytesIO()
    segno.make_qr(uri, error="m").save(out, kind="png", scale=5)
    return out.getvalue()

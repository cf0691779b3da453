"""Whether an OpenPGP key can receive mail, and the one (sub)key mail to it is encrypted to.

This is the single judgement that both the upload check (openpgp_keys) and the delivery stage
(pgpmime) make, from gpg's listing of the key (python-gnupg's ``list_keys()`` entry). Delivery
then names the chosen (sub)key to gpg with a ``!`` suffix, so gpg cannot pick another one itself
(by default it takes the newest encryption subkey, which may be a weak one added later).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

MIN_RSA_BITS = 2048
FINGERPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")

# gpg's public-key algorithm numbers, for display.
ALGORITHMS = {
    "1": "rsa",
    "2": "rsa",
    "3": "rsa",
    "16": "elgamal",
    "17": "dsa",
    "18": "ecdh",
    "19": "ecdsa",
    "22": "eddsa",
    "25": "x25519",
    "26": "x448",
    "27": "ed25519",
    "28": "ed448",
}
SIZED = {"rsa", "elgamal", "dsa"}


class KeyUnusable(Exception):
    """The key cannot receive mail now. CODE is the API's error code, REASON a short phrase
    (the delivery stage's failure, shown on the key page), MESSAGE the full sentence with
    advice for the person uploading it."""

    def __init__(self, code: str, reason: str, message: str) -> None:
        super().__init__(reason)
        self.code, self.reason, self.message = code, reason, message


@dataclass(frozen=True)
class Verdict:
    encrypt_to: str  # fingerprint of the (sub)key mail is encrypted to
    # When the key stops being able to encrypt at all (primary, or its last strong encryption
    # subkey, expires); None: never.
    usable_until: int | None
    # When ENCRYPT_TO itself stops (then judge again: another strong subkey may take over).
    chosen_until: int | None
    algorithm: str  # of the primary key, for display


def date(timestamp: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


def algorithm(info: dict[str, Any]) -> str:
    name = ALGORITHMS.get(str(info.get("algo", "")), f"algorithm {info.get('algo', '?')}")
    if info.get("curve"):
        return str(info["curve"])
    return f"{name}{info.get('length', '')}" if name in SIZED else name


def expiry(info: dict[str, Any]) -> int | None:
    value = str(info.get("expires") or "")
    return int(value) if value.isdigit() else None


def _usable(info: dict[str, Any], now: int) -> bool:
    expires = expiry(info)
    return info.get("trust") not in ("r", "e", "i") and (expires is None or expires > now)


def weak(info: dict[str, Any]) -> bool:
    name = ALGORITHMS.get(str(info.get("algo", "")), "")
    length = str(info.get("length") or "0")
    return name in ("rsa", "elgamal") and length.isdigit() and int(length) < MIN_RSA_BITS


def _created(info: dict[str, Any]) -> int:
    value = str(info.get("date") or "")
    return int(value) if value.isdigit() else 0


def _earliest(*times: int | None) -> int | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def judge(listed: dict[str, Any], now: int) -> Verdict:
    """Judge the listed key at NOW; raise KeyUnusable if no strong (sub)key can encrypt."""
    trust = listed.get("trust")
    if trust == "r":
        raise KeyUnusable(
            "key_revoked",
            "the key is revoked",
            "This key is revoked: upload a key that is still in use.",
        )
    primary_expiry = expiry(listed)
    if trust == "e" or (primary_expiry is not None and primary_expiry <= now):
        when = f" on {date(primary_expiry)}" if primary_expiry else ""
        raise KeyUnusable(
            "key_expired",
            "the key has expired",
            f"This key expired{when}. Extend it (gpg --quick-set-expire) and upload it again.",
        )
    if trust == "i":
        raise KeyUnusable(
            "key_invalid", "gpg considers the key invalid", "gpg considers this key invalid."
        )
    # The primary first, so that among equally new keys a subkey wins (as gpg prefers).
    candidates = [
        info
        for info in [listed, *(listed.get("subkey_info") or {}).values()]
        if "e" in str(info.get("cap", ""))
    ]
    if not candidates:
        raise KeyUnusable(
            "cannot_encrypt",
            "the key has no usable encryption (sub)key",
            "This key cannot encrypt: it has no encryption subkey. Add one "
            "(gpg --quick-add-key FINGERPRINT cv25519 encr) and upload the key again.",
        )
    alive = [c for c in candidates if _usable(c, now)]
    if not alive:
        raise KeyUnusable(
            "encryption_key_expired",
            "the key has no usable encryption (sub)key: it is expired or revoked",
            "The encryption subkey of this key is expired or revoked. Add a new one or extend "
            "it, then upload the key again.",
        )
    strong = [c for c in alive if not weak(c)]
    if not strong:
        raise KeyUnusable(
            "weak_key",
            f"the key has no usable encryption (sub)key of at least {MIN_RSA_BITS} bits",
            f"The encryption key is too weak: RSA and ElGamal keys need at least {MIN_RSA_BITS} "
            "bits.",
        )
    # gpg's own summary of usable capabilities must agree ("E" in the primary's field).
    if "E" not in str(listed.get("cap", "")):
        raise KeyUnusable(
            "cannot_encrypt",
            "the key has no usable encryption (sub)key",
            "gpg finds no usable encryption key in this key.",
        )
    # The newest strong one, as gpg itself would choose among acceptable keys.
    chosen = max(reversed(strong), key=_created)
    encrypt_to = str(chosen.get("fingerprint", "")).upper()
    if not FINGERPRINT.fullmatch(encrypt_to):
        raise KeyUnusable(
            "key_invalid",
            "gpg reports no fingerprint for the encryption key",
            "gpg reports an unexpected fingerprint for this key.",
        )
    ends = [expiry(c) for c in strong]
    last = None if any(e is None for e in ends) else max(e for e in ends if e is not None)
    return Verdict(
        encrypt_to=encrypt_to,
        usable_until=_earliest(primary_expiry, last),
        chosen_until=_earliest(primary_expiry, expiry(chosen)),
        algorithm=algorithm(listed),
    )

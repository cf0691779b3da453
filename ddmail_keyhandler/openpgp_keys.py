"""OpenPGP public keys: validate an upload, keep it per account, activate it for a mailbox.

Validation never touches a shared keyring. Each upload is first read by a small packet walker
(so a secret key or a keyring of several keys is refused before gpg sees it, and the exact
bytes checked here are what gpg gets), then imported into a throwaway GnuPG home (a fresh
0700 temporary directory, removed afterwards) where gpg judges self-signatures, expiry and
revocation. What is stored is gpg's minimal export of the one key, armored.

gpg runs with ``--no-autostart`` (a public key needs no gpg-agent, so none is left behind per
upload) and a minimal environment (nothing of this process's environment reaches it).
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gnupg
from sqlalchemy import Select, delete, func, select
from sqlalchemy.exc import IntegrityError

from ddmail_common.db import Database
from ddmail_common.errors import ApiError, bad_request, conflict, not_found, rule_violated
from ddmail_keyhandler.models import MailboxKey
from ddmail_keyhandler.openpgp_judge import (
    FINGERPRINT,
    KeyUnusable,
    algorithm,
    date,
    expiry,
    judge,
)
from ddmail_keyhandler.openpgp_models import OpenPgpActivation, OpenPgpKey
from ddmail_keyhandler.openpgp_uids import uids_for

MAX_KEY_BYTES = 64 * 1024
MAX_KEYS_PER_ACCOUNT = 50
MAX_UIDS = 20
MAX_UID_CHARS = 200
FINGERPRINT_LENGTH = {4: 40, 6: 64}

# OpenPGP packet tags (RFC 9580 §5).
SIGNATURE, SECRET_KEY, PUBLIC_KEY, SECRET_SUBKEY = 2, 5, 6, 7
MARKER, TRUST, USER_ID, PUBLIC_SUBKEY, USER_ATTRIBUTE, PADDING = 10, 12, 13, 14, 17, 21
KEY_PACKETS = {
    SIGNATURE,
    PUBLIC_KEY,
    MARKER,
    TRUST,
    USER_ID,
    PUBLIC_SUBKEY,
    USER_ATTRIBUTE,
    PADDING,
}

ARMOR = re.compile(
    r"-----BEGIN PGP ([A-Z0-9 ,/]+)-----[ \t]*\r?\n(.*?)-----END PGP \1-----", re.DOTALL
)
ARMOR_HEADER = re.compile(r"^[A-Za-z0-9-]+: ")
PRIVATE_KEY_REFUSAL = (
    "This is a secret (private) key. Upload only your public key "
    "(gpg --export --armor YOUR-KEY), and never give your secret key to anyone."
)


def invalid(message: str, code: str = "invalid_key") -> ApiError:
    return bad_request(message, code)


def refused(message: str, code: str) -> ApiError:
    return rule_violated(message, code)


def changed_meanwhile() -> ApiError:
    return conflict("The key changed meanwhile; reload the page and try again.", "key_changed")


# -- the bytes of an upload -----------------------------------------------------------------


def _crc24_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
        table.append(crc & 0xFFFFFF)
    return table


CRC24_TABLE = _crc24_table()


def _crc24(data: bytes) -> int:
    """The armor checksum (RFC 9580 §6.1)."""
    crc = 0xB704CE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFF) ^ CRC24_TABLE[(crc >> 16) ^ byte]
    return crc


def _dearmor_block(kind: str, body: str) -> bytes:
    if kind == "PRIVATE KEY BLOCK":
        raise refused(PRIVATE_KEY_REFUSAL, "secret_key")
    if kind != "PUBLIC KEY BLOCK":
        raise invalid(f"This is not a public key but a PGP {kind.lower()}.", "not_a_key")
    lines = [line.strip() for line in body.splitlines()]
    # Armor headers ("Comment: ...") end at the first empty line.
    if "" in lines and all(ARMOR_HEADER.match(line) for line in lines[: lines.index("")]):
        lines = lines[lines.index("") + 1 :]
    lines = [line for line in lines if line]
    checksum = None
    if lines and lines[-1].startswith("=") and len(lines[-1]) == 5:
        checksum = lines.pop()[1:]
    try:
        data = binascii.a2b_base64("".join(lines).encode("ascii"), strict_mode=True)
        expected = base64.b64decode(checksum, validate=True) if checksum else None
    except (ValueError, UnicodeEncodeError):
        raise invalid("The armored key is damaged (its base64 text does not decode).") from None
    if expected is not None and int.from_bytes(expected, "big") != _crc24(data):
        raise invalid("The armored key is damaged (its checksum does not match).")
    return data


def upload_bytes(key: str) -> bytes:
    """The binary packets of an upload: armored text, or base64 of a binary key."""
    if "-----BEGIN PGP" in key:
        if len(key.encode()) > MAX_KEY_BYTES:
            raise too_large()
        blocks = ARMOR.findall(key)
        if not blocks:
            raise invalid("The armored key is cut off: its END line is missing.")
        return b"".join(_dearmor_block(kind, body) for kind, body in blocks)
    try:
        data = base64.b64decode("".join(key.split()), validate=True)
    except (ValueError, binascii.Error):
        raise invalid(
            "This is not an OpenPGP public key: upload an armored key "
            "(-----BEGIN PGP PUBLIC KEY BLOCK-----) or a binary key file."
        ) from None
    if len(data) > MAX_KEY_BYTES:
        raise too_large()
    if not data:
        raise invalid("The key is empty.")
    return data


def too_large() -> ApiError:
    return invalid(
        f"The key is larger than {MAX_KEY_BYTES // 1024} KiB. Export it without other people's "
        "signatures: gpg --export --armor --export-options export-minimal YOUR-KEY",
        "key_too_large",
    )


def packets(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(tag, body) of each OpenPGP packet; raise on anything that is not a well-formed packet
    sequence (key material never uses partial or indeterminate lengths)."""
    damaged = invalid("This is not an OpenPGP key, or the key is damaged.")
    i, n = 0, len(data)
    while i < n:
        head = data[i]
        i += 1
        if not head & 0x80:
            raise damaged
        if head & 0x40:  # new format
            tag = head & 0x3F
            if i >= n:
                raise damaged
            first = data[i]
            i += 1
            if first < 192:
                length = first
            elif first < 224:
                if i >= n:
                    raise damaged
                length = ((first - 192) << 8) + data[i] + 192
                i += 1
            elif first == 255:
                if i + 4 > n:
                    raise damaged
                length = int.from_bytes(data[i : i + 4], "big")
                i += 4
            else:
                raise damaged
        else:  # legacy format
            tag, length_type = (head >> 2) & 0x0F, head & 0x03
            if length_type == 3:
                raise damaged
            size = (1, 2, 4)[length_type]
            if i + size > n:
                raise damaged
            length = int.from_bytes(data[i : i + size], "big")
            i += size
        if i + length > n:
            raise damaged
        yield tag, data[i : i + length]
        i += length


def key_version(data: bytes) -> int:
    """Check the packet structure of one transferable public key; return its version."""
    tags: list[int] = []
    version = 0
    for tag, body in packets(data):
        if tag in (SECRET_KEY, SECRET_SUBKEY):
            raise refused(PRIVATE_KEY_REFUSAL, "secret_key")
        if tag not in KEY_PACKETS:
            raise invalid(
                "This is not a public key (it holds a message or signature packet).", "not_a_key"
            )
        if tag == PUBLIC_KEY and PUBLIC_KEY not in tags:
            version = body[0] if body else 0
        if tag != MARKER:
            tags.append(tag)
    primaries = tags.count(PUBLIC_KEY)
    if primaries == 0:
        raise invalid("This file holds no public key.", "no_key")
    if primaries > 1:
        raise refused(
            f"This file holds {primaries} keys. Upload exactly one key "
            "(export it alone: gpg --export --armor FINGERPRINT).",
            "several_keys",
        )
    if tags[0] != PUBLIC_KEY:
        raise invalid("This is not an OpenPGP key, or the key is damaged.")
    if version not in FINGERPRINT_LENGTH:
        raise refused(
            f"Version {version} keys are not supported: upload a version 4 or version 6 key.",
            "unsupported_version",
        )
    return version


# -- gpg's verdict --------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidKey:
    fingerprint: str
    key_version: int
    primary_algo: str
    public_key: str  # armored minimal export
    uids: list[str]
    created_at: int
    expires_at: int | None
    # The stored key this upload was merged into (a re-upload of a key the account has).
    previous: str | None = None
    # Why the merged key cannot encrypt now (say it was revoked); a new key is refused instead.
    unusable: str | None = None


def _uids(listed: dict[str, Any], uid_map: dict[str, Any]) -> list[str]:
    shown = []
    for uid in listed.get("uids", []):
        if (uid_map.get(uid) or {}).get("trust") == "r":
            continue  # a revoked user id is not the owner's any more
        text = "".join(ch for ch in str(uid) if ch.isprintable())[:MAX_UID_CHARS]
        if text and text not in shown:
            shown.append(text)
    return shown[:MAX_UIDS]


def _unreadable(version: int) -> ApiError:
    if version == 6:
        return refused(
            "The GnuPG on this server cannot read version 6 keys yet. Upload a version 4 key.",
            "unsupported_version",
        )
    return invalid(
        "gpg could not read this key: it may be damaged, or lack a valid self-signature or "
        "user ID.",
        "unreadable_key",
    )


def _one_key(gpg: Any, version: int) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The single key in GPG's home: (its listing, the uid map, its fingerprint)."""
    listing = gpg.list_keys()
    if len(listing) != 1:
        raise _unreadable(version)
    listed = listing[0]
    fingerprint = str(listed.get("fingerprint", "")).upper()
    if len(fingerprint) != FINGERPRINT_LENGTH[version] or not FINGERPRINT.fullmatch(fingerprint):
        raise invalid("gpg reports an unexpected fingerprint for this key.", "unreadable_key")
    return listed, listing.uid_map, fingerprint


def never_stored(fingerprint: str) -> str | None:
    return None


def validate(
    data: bytes,
    now: int | None = None,
    gpgbinary: str = "gpg",
    stored: Callable[[str], str | None] = never_stored,
) -> ValidKey:
    """Validate the binary packets of one uploaded public key; raise ApiError to refuse.

    STORED gives the armored key already kept under a fingerprint, if any: the upload is then
    merged into it as gpg --import merges (newer self-signatures, new subkeys and user IDs,
    revocations; nothing is dropped), and the merged key is judged and kept even when it can no
    longer encrypt, so that a revocation reaches the delivery stage."""
    now = int(time.time()) if now is None else now
    if len(data) > MAX_KEY_BYTES:
        raise too_large()
    version = key_version(data)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    with tempfile.TemporaryDirectory(prefix="ddmail-pgp-") as home:
        os.chmod(home, 0o700)
        gpg = gnupg.GPG(gpgbinary=gpgbinary, gnupghome=home, options=["--no-autostart"], env=env)
        imported = gpg.import_keys(data)
        if int(getattr(imported, "sec_read", 0) or 0):
            raise refused(PRIVATE_KEY_REFUSAL, "secret_key")
        if imported.count != 1:
            raise _unreadable(version)
        listed, uid_map, fingerprint = _one_key(gpg, version)
        previous = stored(fingerprint)
        if previous is not None:
            gpg.import_keys(upload_bytes(previous))
            listed, uid_map, merged = _one_key(gpg, version)
            if merged != fingerprint:
                raise invalid("gpg could not merge this key.", "unreadable_key")
        unusable = None
        try:
            verdict = judge(listed, now)
            expires_at, algo = verdict.usable_until, verdict.algorithm
        except KeyUnusable as exc:
            if previous is None:
                raise refused(exc.message, exc.code) from None
            unusable, expires_at, algo = exc.reason, expiry(listed), algorithm(listed)
        armored = gpg.export_keys(fingerprint, armor=True, minimal=True)
    if "-----BEGIN PGP PUBLIC KEY BLOCK-----" not in armored:
        raise invalid("gpg could not export this key.", "unreadable_key")
    created = str(listed.get("date") or "0")
    return ValidKey(
        fingerprint=fingerprint,
        key_version=version,
        primary_algo=algo[:32],
        public_key=armored,
        uids=_uids(listed, uid_map),
        created_at=int(created) if created.isdigit() else 0,
        expires_at=expires_at,
        previous=previous,
        unusable=unusable,
    )


def validate_upload(key: str, now: int | None = None) -> ValidKey:
    return validate(upload_bytes(key), now)


def normalize_fingerprint(text: str) -> str:
    fingerprint = "".join(text.split()).upper()
    if not FINGERPRINT.fullmatch(fingerprint):
        raise bad_request(
            "The fingerprint must be 40 (version 4 key) or 64 (version 6 key) hexadecimal "
            "characters.",
            "invalid_fingerprint",
        )
    return fingerprint


def grouped(fingerprint: str) -> str:
    """The fingerprint in groups of four, as people compare it (also for the audit trail)."""
    return " ".join(fingerprint[i : i + 4] for i in range(0, len(fingerprint), 4))


# -- the store ------------------------------------------------------------------------------


def _view(
    key: OpenPgpKey, mailboxes: list[str], now: int, failures: dict[str, str]
) -> dict[str, Any]:
    uids = json.loads(key.uids)
    return {
        "fingerprint": key.fingerprint,
        "key_version": key.key_version,
        "algorithm": key.primary_algo,
        "uids": uids,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "uploaded_at": key.uploaded_at,
        "expired": key.expires_at is not None and key.expires_at <= now,
        "unusable": key.unusable,
        "mailboxes": mailboxes,
        # address → the user IDs the Web Key Directory publishes with the key for it (wkd.py);
        # none: the key is not published for that address
        "published": {m: uids_for(m, uids) for m in mailboxes},
        # address → why mail to it is being held back right now
        "failures": {m: failures[m] for m in mailboxes if m in failures},
    }


def active_keys(*columns: Any) -> Select[Any]:
    """COLUMNS of every activation with its key, for mailboxes that still exist (a shredded
    mailbox's activation neither encrypts nor publishes anything)."""
    return (
        select(*columns)
        .select_from(OpenPgpActivation)
        .join(
            OpenPgpKey,
            (OpenPgpKey.account == OpenPgpActivation.account)
            & (OpenPgpKey.fingerprint == OpenPgpActivation.fingerprint),
        )
        .join(
            MailboxKey,
            (MailboxKey.address == OpenPgpActivation.address)
            & (MailboxKey.account == OpenPgpActivation.account),
        )
    )


class OpenPgpKeys:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _stored(self, account: str, fingerprint: str) -> str | None:
        with self.db.session() as s:
            row = s.get(OpenPgpKey, (account, fingerprint))
            return None if row is None else row.public_key

    def upload(self, account: str, key: str) -> dict[str, Any]:
        """Add a key, or update the account's copy of it (same fingerprint): the answer says
        which ("updated") and whether anything in it changed."""
        valid = validate(upload_bytes(key), stored=lambda fpr: self._stored(account, fpr))
        now = int(time.time())
        if valid.previous is not None:
            return self._update(account, valid, now)
        row = OpenPgpKey(
            account=account,
            fingerprint=valid.fingerprint,
            key_version=valid.key_version,
            primary_algo=valid.primary_algo,
            public_key=valid.public_key,
            uids=json.dumps(valid.uids),
            created_at=valid.created_at,
            expires_at=valid.expires_at,
            uploaded_at=now,
        )
        try:
            with self.db.session() as s:
                held = s.scalar(
                    select(func.count())
                    .select_from(OpenPgpKey)
                    .where(OpenPgpKey.account == account)
                )
                if (held or 0) >= MAX_KEYS_PER_ACCOUNT:
                    raise refused(
                        f"An account can keep at most {MAX_KEYS_PER_ACCOUNT} OpenPGP keys. "
                        "Remove one you no longer use first.",
                        "too_many_keys",
                    )
                s.add(row)
        except IntegrityError:  # a concurrent upload of the same key won
            raise changed_meanwhile() from None
        return {**_view(row, [], now, {}), "updated": False, "changed": True}

    def _update(self, account: str, valid: ValidKey, now: int) -> dict[str, Any]:
        """Store the merged key in place of the one it was merged into. Its activations stay:
        the delivery stage reads the key afresh for every message, so a revocation or new
        subkey counts from the next delivery, and a new expiry is warned about anew."""
        live = {a.address for a in self._live_activations(account)}
        with self.db.session() as s:
            row = s.get(OpenPgpKey, (account, valid.fingerprint))
            if row is None or row.public_key != valid.previous:
                raise changed_meanwhile()
            changed = row.public_key != valid.public_key or row.unusable != valid.unusable
            row.public_key = valid.public_key
            row.uids = json.dumps(valid.uids)
            row.primary_algo = valid.primary_algo
            row.expires_at = valid.expires_at
            row.unusable = valid.unusable
            using = s.execute(
                select(OpenPgpActivation.address).where(
                    OpenPgpActivation.account == account,
                    OpenPgpActivation.fingerprint == valid.fingerprint,
                )
            ).scalars()
            mailboxes = sorted(a for a in using if a in live)
            view = _view(row, mailboxes, now, {})
        return {**view, "updated": True, "changed": changed}

    def _live_activations(self, account: str) -> list[OpenPgpActivation]:
        """Activations whose mailbox still exists (a removed mailbox loses its key row first;
        its activation is then dropped on the next removal of a key)."""
        with self.db.session() as s:
            return list(
                s.execute(
                    select(OpenPgpActivation)
                    .join(
                        MailboxKey,
                        (MailboxKey.address == OpenPgpActivation.address)
                        & (MailboxKey.account == OpenPgpActivation.account),
                    )
                    .where(OpenPgpActivation.account == account)
                    .order_by(OpenPgpActivation.address)
                ).scalars()
            )

    def list(self, account: str) -> list[dict[str, Any]]:
        now = int(time.time())
        used: dict[str, list[str]] = {}
        failures: dict[str, str] = {}
        for activation in self._live_activations(account):
            used.setdefault(activation.fingerprint, []).append(activation.address)
            if activation.failing_since is not None:
                failures[activation.address] = activation.failure or "encryption failed"
        with self.db.session() as s:
            keys = s.execute(
                select(OpenPgpKey)
                .where(OpenPgpKey.account == account)
                .order_by(OpenPgpKey.uploaded_at, OpenPgpKey.fingerprint)
            ).scalars()
            return [_view(k, used.get(k.fingerprint, []), now, failures) for k in keys]

    def activate(self, account: str, address: str, fingerprint: str) -> dict[str, Any]:
        fingerprint = normalize_fingerprint(fingerprint)
        now = int(time.time())
        try:
            previous = self._activate(account, address, fingerprint, now)
        except IntegrityError:  # the key was removed meanwhile
            raise changed_meanwhile() from None
        return {"address": address, "fingerprint": fingerprint, "replaced": previous}

    def _activate(self, account: str, address: str, fingerprint: str, now: int) -> str | None:
        with self.db.session() as s:
            key = s.get(OpenPgpKey, (account, fingerprint))
            if key is None:
                raise not_found("No such OpenPGP key in this account.", "unknown_key")
            mailbox = s.execute(
                select(MailboxKey.address).where(
                    MailboxKey.address == address, MailboxKey.account == account
                )
            ).first()
            if mailbox is None:
                raise not_found("No such mailbox in this account.")
            if key.expires_at is not None and key.expires_at <= now:
                raise refused(
                    f"This key expired on {date(key.expires_at)}. Extend it "
                    "(gpg --quick-set-expire) and upload it again.",
                    "key_expired",
                )
            if key.unusable is not None:
                raise refused(
                    f"This key cannot encrypt any more ({key.unusable}). Activate another key.",
                    "key_unusable",
                )
            current = s.get(OpenPgpActivation, address)
            previous = None
            if current is not None:
                previous = current.fingerprint
                current.account = account
                current.fingerprint = fingerprint
                current.activated_at = now
            else:
                s.add(
                    OpenPgpActivation(
                        address=address, account=account, fingerprint=fingerprint, activated_at=now
                    )
                )
        return previous

    def deactivate(self, account: str, address: str) -> dict[str, Any]:
        with self.db.session() as s:
            current = s.get(OpenPgpActivation, address)
            if current is None or current.account != account:
                raise not_found("This mailbox has no active OpenPGP key.", "not_active")
            fingerprint = current.fingerprint
            s.delete(current)
        return {"address": address, "fingerprint": fingerprint}

    def remove(self, account: str, fingerprint: str) -> dict[str, Any]:
        fingerprint = normalize_fingerprint(fingerprint)
        live = {a.address for a in self._live_activations(account)}
        try:
            self._remove(account, fingerprint, live)
        except IntegrityError:  # activated meanwhile
            raise changed_meanwhile() from None
        return {"fingerprint": fingerprint, "removed": True}

    def _remove(self, account: str, fingerprint: str, live: set[str]) -> None:
        with self.db.session() as s:
            key = s.get(OpenPgpKey, (account, fingerprint))
            if key is None:
                raise not_found("No such OpenPGP key in this account.", "unknown_key")
            using = s.execute(
                select(OpenPgpActivation).where(
                    OpenPgpActivation.account == account,
                    OpenPgpActivation.fingerprint == fingerprint,
                )
            ).scalars()
            stale: list[OpenPgpActivation] = []
            active: list[OpenPgpActivation] = []
            for activation in using:
                (active if activation.address in live else stale).append(activation)
            if active:
                names = ", ".join(sorted(a.address for a in active))
                raise refused(
                    f"This key is active on {names}. Deactivate it there first.", "key_in_use"
                )
            for activation in stale:
                s.delete(activation)
            s.flush()
            s.delete(key)

    def purge_account(self, account: str) -> int:
        """Drop every key and activation of ACCOUNT (account deletion); return keys removed."""
        with self.db.session() as s:
            s.execute(delete(OpenPgpActivation).where(OpenPgpActivation.account == account))
            result = s.execute(delete(OpenPgpKey).where(OpenPgpKey.account == account))
            return int(result.rowcount)  # type: ignore[attr-defined]

    def failures(self) -> builtins.list[dict[str, Any]]:
        """Every mailbox whose mail is held back now (for the panel's audit trail)."""
        with self.db.session() as s:
            rows = s.execute(
                select(OpenPgpActivation).where(OpenPgpActivation.failing_since.is_not(None))
            ).scalars()
            return [
                {
                    "account": a.account,
                    "address": a.address,
                    "since": a.failing_since,
                    "reason": a.failure or "",
                }
                for a in rows
            ]

    def expiring(self, within: int, now: int) -> builtins.list[tuple[str, str, int]]:
        """(address, armored key, expiry) of active keys that expire within WITHIN seconds and
        whose owner has not been warned about that expiry yet."""
        with self.db.session() as s:
            rows = s.execute(
                active_keys(
                    OpenPgpActivation.address,
                    OpenPgpKey.public_key,
                    OpenPgpKey.expires_at,
                    OpenPgpActivation.expiry_warned,
                ).where(
                    OpenPgpKey.expires_at.is_not(None),
                    OpenPgpKey.expires_at > now,
                    OpenPgpKey.expires_at <= now + within,
                    OpenPgpKey.unusable.is_(None),  # nothing can be encrypted to it
                )
            ).all()
        return [(str(a), str(k), int(e or 0)) for a, k, e, warned in rows if warned != e]

    def mark_warned(self, address: str, expires_at: int) -> None:
        with self.db.session() as s:
            row = s.get(OpenPgpActivation, address)
            if row is not None:
                row.expiry_warned = expires_at

    def record_delivery(self, address: str, failure: str | None) -> None:
        """The stage's verdict for ADDRESS: None clears a failure, a reason sets it."""
        with self.db.session() as s:
            row = s.get(OpenPgpActivation, address)
            if row is None or (failure is None and row.failing_since is None):
                return
            if failure is None:
                row.failing_since, row.failure = None, None
            elif row.failing_since is None:
                row.failing_since, row.failure = int(time.time()), failure[:200]

    def active_key(self, address: str) -> str | None:
        """The armored key mail to ADDRESS must be encrypted to, or None (for the delivery
        stage; it must still check expiry itself and fail closed)."""
        with self.db.session() as s:
            row = s.execute(
                active_keys(OpenPgpKey.public_key).where(OpenPgpActivation.address == address)
            ).first()
            return None if row is None else str(row[0])

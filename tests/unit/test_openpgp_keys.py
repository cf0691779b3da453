"""Validation of uploaded OpenPGP public keys (keyhandler), with real keys made by gpg once
per module in a throwaway GnuPG home (ed25519/cv25519 without a passphrase: well under a
second for the whole set). Keys already expired are made with gpg's faked system time."""

from __future__ import annotations

import base64
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ddmail_common.errors import ApiError
from ddmail_keyhandler.openpgp_keys import (
    MAX_KEY_BYTES,
    grouped,
    key_version,
    normalize_fingerprint,
    packets,
    upload_bytes,
    validate,
    validate_upload,
)

PAST = "--faked-system-time=20200101T000000"
# Two past moments a day apart, so that a key's subkeys have distinct creation times (gpg picks
# the newest encryption subkey itself).
EARLIER = "--faked-system-time=20240101T000000"
LATER = "--faked-system-time=20240102T000000"


@dataclass(frozen=True)
class PgpKeys:
    good: str  # ed25519 + cv25519 encryption subkey, armored
    good_binary: bytes
    good_fpr: str
    other: str  # a second good key
    other_fpr: str
    expiring: str  # good, but expires in two years
    sign_only: str
    expired: str  # made in 2020, expired at the end of 2020
    expired_subkey: str  # primary valid, its only encryption subkey expired
    revoked: str
    weak: str  # RSA 1024 that can encrypt
    two: str  # good + sign_only in one armored block
    secret: str  # a secret key export
    revoked_before: str  # the revoked key as exported before its revocation
    revoked_fpr: str
    two_uids: str  # user IDs for alice@ddmail.test, alice@elsewhere.example and a bare name
    two_uids_fpr: str
    # A strong cv25519 encryption subkey and a newer weak RSA-1024 one.
    mixed: str
    mixed_fpr: str
    mixed_strong: str  # key id of the cv25519 subkey
    mixed_weak: str  # key id of the RSA-1024 subkey
    refreshable: str  # expires in ten days
    refreshed: str  # the same key, extended (primary and subkey) to two years
    refreshable_fpr: str


class Gpg:
    """gpg in one throwaway home; keys without a passphrase (protecting them costs seconds)."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def __call__(self, *args: str, data: bytes | None = None) -> bytes:
        cmd = ["gpg", "--homedir", str(self.home), "--batch", "--quiet"]
        cmd += ["--pinentry-mode", "loopback", "--passphrase", "", *args]
        done = subprocess.run(cmd, input=data, capture_output=True, check=False, timeout=60)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout

    def fingerprint(self, name: str) -> str:
        return self.fingerprint_of(f"{name}@example.org")

    def fingerprint_of(self, address: str) -> str:
        listing = self("--with-colons", "--list-keys", f"<{address}>").decode()
        return re.findall(r"^fpr:+([0-9A-F]+):", listing, re.MULTILINE)[0]

    def subkey_ids(self, fingerprint: str) -> dict[str, str]:
        """gpg's algorithm number → key id, of the key's subkeys."""
        listing = self("--with-colons", "--list-keys", fingerprint).decode()
        rows = [line.split(":") for line in listing.splitlines() if line.startswith("sub:")]
        return {row[3]: row[4] for row in rows}

    def new(self, name: str, algo: str, usage: str, expire: str, *extra: str) -> str:
        self(*extra, "--quick-gen-key", f"{name} <{name}@example.org>", algo, usage, expire)
        return self.fingerprint(name)

    def export(self, *names: str) -> str:
        return self("--armor", "--export", *(f"<{n}@example.org>" for n in names)).decode()


def make_keys(home: Path) -> PgpKeys:
    gpg = Gpg(home)
    try:
        good = gpg.new("good", "future-default", "default", "never")
        other = gpg.new("other", "future-default", "default", "never")
        gpg.new("expiring", "future-default", "default", "2y")
        gpg.new("sign_only", "ed25519", "sign", "never")
        gpg.new("expired", "future-default", "default", "1y", PAST)
        old = gpg.new("expired_subkey", "ed25519", "cert,sign", "never", PAST)
        gpg(PAST, "--quick-add-key", old, "cv25519", "encr", "1y")
        revoked = gpg.new("revoked", "future-default", "default", "never")
        # gpg keeps a revocation certificate for every new key, disarmed by a leading colon.
        revoked_before = gpg("--armor", "--export", revoked).decode()
        cert = (home / "openpgp-revocs.d" / f"{revoked}.rev").read_text()
        gpg("--import", data=cert.replace(":-----BEGIN", "-----BEGIN").encode())
        gpg.new("weak", "rsa1024", "sign,encr", "never")
        gpg.new("secret", "future-default", "default", "never")
        gpg("--quick-gen-key", "Alice Real <alice@ddmail.test>", "future-default", "default")
        two_uids = gpg.fingerprint_of("alice@ddmail.test")
        gpg("--quick-add-uid", two_uids, "Alice Elsewhere <alice@elsewhere.example>")
        gpg("--quick-add-uid", two_uids, "Alice Smith")
        mixed = gpg.new("mixed", "ed25519", "cert,sign", "never", EARLIER)
        gpg(LATER, "--quick-add-key", mixed, "cv25519", "encr", "never")
        gpg("--quick-add-key", mixed, "rsa1024", "encr", "never")
        subkeys = gpg.subkey_ids(mixed)
        refreshable = gpg.new("refresh", "future-default", "default", "10d")
        refreshable_export = gpg.export("refresh")
        gpg("--quick-set-expire", refreshable, "2y")
        gpg("--quick-set-expire", refreshable, "2y", "*")
        return PgpKeys(
            good=gpg.export("good"),
            good_binary=gpg("--export", good),
            good_fpr=good,
            other=gpg.export("other"),
            other_fpr=other,
            expiring=gpg.export("expiring"),
            sign_only=gpg.export("sign_only"),
            expired=gpg.export("expired"),
            expired_subkey=gpg.export("expired_subkey"),
            revoked=gpg.export("revoked"),
            weak=gpg.export("weak"),
            two=gpg.export("good", "sign_only"),
            secret=gpg("--armor", "--export-secret-keys", "<secret@example.org>").decode(),
            revoked_before=revoked_before,
            revoked_fpr=revoked,
            two_uids=gpg("--armor", "--export", two_uids).decode(),
            two_uids_fpr=two_uids,
            mixed=gpg.export("mixed"),
            mixed_fpr=mixed,
            mixed_strong=subkeys["18"],
            mixed_weak=subkeys["1"],
            refreshable=refreshable_export,
            refreshed=gpg.export("refresh"),
            refreshable_fpr=refreshable,
        )
    finally:
        subprocess.run(
            ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
            timeout=30,
        )


@pytest.fixture(scope="module")
def keys() -> Iterator[PgpKeys]:
    with tempfile.TemporaryDirectory(prefix="ddmail-test-pgp-") as home:
        yield make_keys(Path(home))


def refusal(key: str) -> ApiError:
    with pytest.raises(ApiError) as caught:
        validate_upload(key)
    return caught.value


# -- accepted -------------------------------------------------------------------------------


def test_an_armored_key_is_accepted_and_stored_minimal(keys: PgpKeys) -> None:
    valid = validate_upload(keys.good)
    assert valid.fingerprint == keys.good_fpr and len(valid.fingerprint) == 40
    assert valid.key_version == 4
    assert valid.primary_algo == "ed25519"
    assert valid.uids == ["good <good@example.org>"]
    assert valid.expires_at is None and valid.created_at > 0
    assert valid.public_key.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert "PRIVATE" not in valid.public_key


def test_a_binary_key_is_accepted_as_base64(keys: PgpKeys) -> None:
    valid = validate_upload(base64.b64encode(keys.good_binary).decode())
    assert valid.fingerprint == keys.good_fpr


def test_armor_headers_and_surrounding_text_are_ignored(keys: PgpKeys) -> None:
    lines = keys.good.splitlines()
    with_header = "\n".join([lines[0], "Comment: my key, ünïcode", *lines[1:]])
    assert validate_upload("Here is my key:\n" + with_header + "\nBye\n").fingerprint == (
        keys.good_fpr
    )


def test_the_stored_key_is_the_uploaded_one_in_a_fresh_keyring(keys: PgpKeys) -> None:
    valid = validate_upload(keys.good)
    again = validate_upload(valid.public_key)
    assert again.fingerprint == valid.fingerprint and again.uids == valid.uids


def test_expiry_is_when_the_key_stops_encrypting(keys: PgpKeys) -> None:
    valid = validate_upload(keys.expiring)
    assert valid.expires_at is not None
    assert 700 * 86400 < valid.expires_at - time.time() < 740 * 86400


# -- refused, each with its own message -----------------------------------------------------


def test_an_expired_key_is_refused(keys: PgpKeys) -> None:
    err = refusal(keys.expired)
    assert (err.status, err.code) == (422, "key_expired")
    assert "This key expired on 2020-12-3" in err.message


def test_a_revoked_key_is_refused(keys: PgpKeys) -> None:
    err = refusal(keys.revoked)
    assert (err.status, err.code) == (422, "key_revoked")
    assert "revoked" in err.message


def test_a_sign_only_key_is_refused(keys: PgpKeys) -> None:
    err = refusal(keys.sign_only)
    assert (err.status, err.code) == (422, "cannot_encrypt")
    assert "cannot encrypt" in err.message


def test_a_key_whose_encryption_subkey_expired_is_refused(keys: PgpKeys) -> None:
    err = refusal(keys.expired_subkey)
    assert (err.status, err.code) == (422, "encryption_key_expired")
    assert "encryption subkey" in err.message


def test_a_weak_rsa_key_is_refused(keys: PgpKeys) -> None:
    err = refusal(keys.weak)
    assert (err.status, err.code) == (422, "weak_key")
    assert "2048" in err.message


def test_two_keys_in_one_file_are_refused(keys: PgpKeys) -> None:
    err = refusal(keys.two)
    assert (err.status, err.code) == (422, "several_keys")
    assert "holds 2 keys" in err.message
    # Two armored blocks one after the other count as two keys as well.
    assert refusal(keys.good + keys.other).code == "several_keys"


def test_a_secret_key_is_refused(keys: PgpKeys) -> None:
    assert "PRIVATE KEY BLOCK" in keys.secret
    err = refusal(keys.secret)
    assert (err.status, err.code) == (422, "secret_key")
    assert "Upload only your public key" in err.message
    # The same secret packets without the telling armor line are refused too.
    binary = upload_bytes(keys.secret.replace("PRIVATE KEY BLOCK", "PUBLIC KEY BLOCK"))
    assert refusal(base64.b64encode(binary).decode()).code == "secret_key"


def test_a_key_over_the_size_limit_is_refused(keys: PgpKeys) -> None:
    padded = keys.good.replace("\n\n", "\n" + "Comment: x\n" * (MAX_KEY_BYTES // 10) + "\n", 1)
    err = refusal(padded)
    assert (err.status, err.code) == (400, "key_too_large")
    assert "larger than 64 KiB" in err.message
    big = base64.b64encode(b"\x99" * (MAX_KEY_BYTES + 1)).decode()
    assert refusal(big).code == "key_too_large"


def test_damaged_armor_is_refused(keys: PgpKeys) -> None:
    lines = keys.good.splitlines()
    body = lines[2]
    lines[2] = ("B" if body[0] != "B" else "C") + body[1:]
    err = refusal("\n".join(lines))
    assert (err.status, err.code) == (400, "invalid_key")
    assert "damaged" in err.message
    cut = refusal(keys.good.split("-----END")[0])
    assert "cut off" in cut.message


@pytest.mark.parametrize(
    ("text", "code", "words"),
    [
        ("hello, this is not a key", "invalid_key", "not an openpgp public key"),
        ("", "invalid_key", "empty"),
        (base64.b64encode(b"\x00\x01\x02garbage").decode(), "invalid_key", "damaged"),
        (
            "-----BEGIN PGP MESSAGE-----\n\nhQEMA1234\n-----END PGP MESSAGE-----\n",
            "not_a_key",
            "pgp message",
        ),
    ],
)
def test_things_that_are_not_keys_are_refused(text: str, code: str, words: str) -> None:
    err = refusal(text)
    assert err.status == 400 and err.code == code and words in err.message.lower()


# -- the packet walker and fingerprints (no gpg) --------------------------------------------


def _packet(tag: int, body: bytes) -> bytes:
    assert len(body) < 192
    return bytes([0xC0 | tag, len(body)]) + body


def _public_key_packet(version: int) -> bytes:
    material = b"\x40" + bytes(32)  # an Ed25519 point, prefixed as in RFC 9580
    if version == 6:
        body = bytes([6]) + (1700000000).to_bytes(4, "big") + bytes([27])
        body += len(bytes(32)).to_bytes(4, "big") + bytes(32)
    else:
        body = bytes([version]) + (1700000000).to_bytes(4, "big") + bytes([22]) + material
    return _packet(6, body)


def test_a_version_6_key_is_recognised_and_refused_clearly_by_this_gpg() -> None:
    data = _public_key_packet(6) + _packet(13, b"v6 <v6@example.org>")
    assert key_version(data) == 6
    with pytest.raises(ApiError) as caught:
        validate(data)
    # GnuPG 2.2 cannot parse v6 keys; a newer gpg reports a 64-hex fingerprint, accepted.
    assert caught.value.code in ("unsupported_version", "unreadable_key", "cannot_encrypt")


@pytest.mark.parametrize("version", [3, 5])
def test_other_key_versions_are_refused(version: int) -> None:
    data = _public_key_packet(version) + _packet(13, b"x <x@example.org>")
    with pytest.raises(ApiError) as caught:
        key_version(data)
    assert caught.value.code == "unsupported_version"
    assert f"Version {version} keys are not supported" in caught.value.message


def test_the_packet_walker_reads_both_header_formats_and_refuses_bad_lengths() -> None:
    old_format = bytes([0x80 | (13 << 2) | 0, 3]) + b"abc"  # legacy, one-octet length
    two_octet = bytes([0xC0 | 13, 192, 8]) + b"u" * 200  # new, two-octet length
    assert [tag for tag, _ in packets(old_format + two_octet)] == [13, 13]
    for bad in (
        bytes([0xC0 | 13, 10]) + b"short",  # body cut off
        bytes([0xC0 | 11, 0xE1]) + b"xx",  # partial length (data packets only)
        bytes([0x80 | (11 << 2) | 3]) + b"xx",  # indeterminate length
        b"\x00\x01",  # not a packet
    ):
        with pytest.raises(ApiError):
            list(packets(bad))


def test_a_message_packet_is_not_a_key() -> None:
    with pytest.raises(ApiError) as caught:
        key_version(_public_key_packet(4) + _packet(11, b"literal"))
    assert caught.value.code == "not_a_key"


def test_fingerprints_of_v4_and_v6_are_accepted() -> None:
    v4 = "63a3 0b8f 7936 5022 0bbd  48f7 5e6a e1aa 8abf 29d5"
    assert normalize_fingerprint(v4) == "63A30B8F793650220BBD48F75E6AE1AA8ABF29D5"
    assert normalize_fingerprint("ab" * 32) == "AB" * 32
    for bad in ("ab" * 19, "ab" * 21, "zz" * 20, "AB" * 32 + "A"):
        with pytest.raises(ApiError):
            normalize_fingerprint(bad)
    assert grouped("AB" * 20).count(" ") == 9


# -- one judgement for upload and delivery ---------------------------------------------------


def listing_of(armored: str) -> dict[str, object]:
    import gnupg

    with tempfile.TemporaryDirectory(prefix="ddmail-test-pgp-") as home:
        gpg = gnupg.GPG(gnupghome=home, options=["--no-autostart"])
        gpg.import_keys(armored)
        return dict(gpg.list_keys()[0])


def test_a_key_with_a_newer_weak_subkey_is_judged_by_its_strong_subkey(keys: PgpKeys) -> None:
    from ddmail_keyhandler.openpgp_judge import judge

    valid = validate_upload(keys.mixed)  # accepted: one strong encryption subkey suffices
    assert valid.fingerprint == keys.mixed_fpr
    verdict = judge(listing_of(valid.public_key), int(time.time()))
    assert verdict.encrypt_to.endswith(keys.mixed_strong)
    assert not verdict.encrypt_to.endswith(keys.mixed_weak)


# -- a re-upload updates the stored key ------------------------------------------------------


def test_a_reupload_is_merged_into_the_stored_key(keys: PgpKeys) -> None:
    first = validate_upload(keys.refreshable)
    assert first.expires_at is not None and first.expires_at - time.time() < 11 * 86400
    stored = {first.fingerprint: first.public_key}
    again = validate(upload_bytes(keys.refreshed), stored=stored.get)
    assert again.fingerprint == keys.refreshable_fpr and again.previous == first.public_key
    assert again.unusable is None
    assert again.expires_at is not None and again.expires_at - time.time() > 700 * 86400
    # The merge keeps what the stored key has and the upload lacks (gpg --import semantics):
    # the extended key uploaded into a store holding it already changes nothing.
    assert (
        validate(
            upload_bytes(keys.refreshable), stored={first.fingerprint: again.public_key}.get
        ).expires_at
        == again.expires_at
    )


def test_a_revocation_uploaded_later_is_kept_and_marks_the_key_unusable(keys: PgpKeys) -> None:
    first = validate_upload(keys.revoked_before)
    again = validate(upload_bytes(keys.revoked), stored={first.fingerprint: first.public_key}.get)
    assert again.unusable == "the key is revoked" and again.previous == first.public_key
    # A new upload of a revoked key is still refused.
    assert refusal(keys.revoked).code == "key_revoked"

"""Key wraps: only the right password or key file opens them, and only for their own mailbox."""

from __future__ import annotations

import pytest

from ddmail_common.config import Argon2Settings
from ddmail_keyhandler.wrapping import (
    RecoveryKey,
    WrongSecret,
    unwrap_for_recovery,
    unwrap_with_password,
    wrap_for_recovery,
    wrap_with_password,
)

CHEAP = Argon2Settings(memory_kib=64, time_cost=1, parallelism=1)
KEY = b"-----BEGIN PRIVATE KEY-----\nsecret material\n-----END PRIVATE KEY-----\n"


def test_password_wrap_opens_with_the_right_password() -> None:
    blob = wrap_with_password(KEY, "correct horse", "mb-1", CHEAP)
    assert unwrap_with_password(blob, "correct horse", "mb-1") == KEY
    assert KEY not in blob


def test_password_wrap_refuses_a_wrong_password() -> None:
    blob = wrap_with_password(KEY, "correct horse", "mb-1", CHEAP)
    with pytest.raises(WrongSecret):
        unwrap_with_password(blob, "correct horsE", "mb-1")


def test_password_wrap_is_bound_to_its_mailbox() -> None:
    blob = wrap_with_password(KEY, "pw", "mb-1", CHEAP)
    with pytest.raises(WrongSecret):
        unwrap_with_password(blob, "pw", "mb-2")


def test_tampered_kdf_parameters_do_not_open_the_wrap() -> None:
    blob = bytearray(wrap_with_password(KEY, "pw", "mb-1", CHEAP))
    blob[4] ^= 1  # memory cost is part of the authenticated header
    with pytest.raises(WrongSecret):
        unwrap_with_password(bytes(blob), "pw", "mb-1")


def test_kdf_parameters_travel_with_the_wrap() -> None:
    blob = wrap_with_password(KEY, "pw", "mb-1", Argon2Settings(128, 2, 1))
    assert unwrap_with_password(blob, "pw", "mb-1") == KEY


def test_recovery_wrap_opens_with_the_key_file_secret() -> None:
    recovery = RecoveryKey.create(b"key file secret", CHEAP)
    blob = wrap_for_recovery(KEY, recovery, "mb-1")
    private = recovery.private_key(b"key file secret")
    assert unwrap_for_recovery(blob, private, recovery.public, "mb-1") == KEY


def test_recovery_key_refuses_a_wrong_key_file() -> None:
    recovery = RecoveryKey.create(b"key file secret", CHEAP)
    with pytest.raises(WrongSecret):
        recovery.private_key(b"another key file")


def test_recovery_wrap_is_bound_to_its_mailbox() -> None:
    recovery = RecoveryKey.create(b"s", CHEAP)
    blob = wrap_for_recovery(KEY, recovery, "mb-1")
    with pytest.raises(WrongSecret):
        unwrap_for_recovery(blob, recovery.private_key(b"s"), recovery.public, "mb-2")


def test_a_password_wrap_is_not_accepted_as_a_recovery_wrap() -> None:
    recovery = RecoveryKey.create(b"s", CHEAP)
    blob = wrap_with_password(KEY, "pw", "mb-1", CHEAP)
    with pytest.raises((WrongSecret, ValueError)):
        unwrap_for_recovery(blob, recovery.private_key(b"s"), recovery.public, "mb-1")

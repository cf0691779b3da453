"""Envelope encryption: seals open only with their master key and context; rotation keeps old
seals readable until they are re-wrapped."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ddmail_web import envelope
from ddmail_web.envelope import EnvelopeError, KeyFileError, MasterKeys, Sealed, rewrap, seal

CONTEXT = b"totp:alice"
KEYS = MasterKeys({"k1": b"\x01" * 32}, current_id="k1")


def _key_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "master.keys"
    path.write_text(text)
    path.chmod(mode)
    return path


def _line(key_id: str, key: bytes) -> str:
    return f"{key_id}:{base64.b64encode(key).decode()}\n"


@given(plaintext=st.binary(max_size=200), context=st.binary(max_size=50))
def test_round_trip(plaintext: bytes, context: bytes) -> None:
    sealed = seal(KEYS, plaintext, context)
    assert envelope.open(KEYS, sealed, context) == plaintext
    assert envelope.open(KEYS, Sealed.from_bytes(sealed.to_bytes()), context) == plaintext


def test_seals_are_randomised_and_hide_the_plaintext() -> None:
    a, b = seal(KEYS, b"JBSWY3DPEHPK3PXP", CONTEXT), seal(KEYS, b"JBSWY3DPEHPK3PXP", CONTEXT)
    assert a.to_bytes() != b.to_bytes()
    assert b"JBSWY3DPEHPK3PXP" not in a.to_bytes()
    assert a.key_id == "k1"
    assert len(a.wrapped_dek) == 12 + 32 + 16


def test_a_wrong_context_does_not_open() -> None:
    sealed = seal(KEYS, b"secret", CONTEXT)
    with pytest.raises(EnvelopeError):
        envelope.open(KEYS, sealed, b"totp:bob")
    with pytest.raises(EnvelopeError):
        rewrap(KEYS, sealed, b"totp:bob")


def test_a_wrong_master_key_does_not_open() -> None:
    sealed = seal(KEYS, b"secret", CONTEXT)
    impostor = MasterKeys({"k1": b"\x02" * 32}, current_id="k1")
    with pytest.raises(EnvelopeError):
        envelope.open(impostor, sealed, CONTEXT)
    with pytest.raises(EnvelopeError, match="no master key"):
        envelope.open(MasterKeys({"k2": b"\x01" * 32}, current_id="k2"), sealed, CONTEXT)


def test_a_relabelled_key_id_does_not_open() -> None:
    # The same key under two ids: the id is authenticated, so relabelling is noticed.
    keys = MasterKeys({"k1": b"\x01" * 32, "k2": b"\x01" * 32}, current_id="k2")
    sealed = seal(keys, b"secret", CONTEXT)
    with pytest.raises(EnvelopeError):
        envelope.open(keys, Sealed("k1", sealed.wrapped_dek, sealed.ciphertext), CONTEXT)


@given(data=st.data())
def test_any_tampered_byte_is_refused(data: st.DataObject) -> None:
    blob = bytearray(seal(KEYS, b"secret", CONTEXT).to_bytes())
    index = data.draw(st.integers(0, len(blob) - 1))
    blob[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(EnvelopeError):
        envelope.open(KEYS, Sealed.from_bytes(bytes(blob)), CONTEXT)


@given(blob=st.binary(max_size=120))
def test_garbage_is_refused_with_envelope_error(blob: bytes) -> None:
    with pytest.raises(EnvelopeError):
        envelope.open(KEYS, Sealed.from_bytes(blob), CONTEXT)


def test_truncated_and_swapped_parts_are_refused() -> None:
    a, b = seal(KEYS, b"one", CONTEXT), seal(KEYS, b"two", CONTEXT)
    blob = a.to_bytes()
    for cut in (0, 1, 5, len(blob) - 1):
        with pytest.raises(EnvelopeError):
            envelope.open(KEYS, Sealed.from_bytes(blob[:cut]), CONTEXT)
    with pytest.raises(EnvelopeError):  # one seal's data key with another's ciphertext
        envelope.open(KEYS, Sealed("k1", a.wrapped_dek, b.ciphertext), CONTEXT)
    with pytest.raises(EnvelopeError, match="version"):
        Sealed.from_bytes(bytes([2]) + blob[1:])


def test_generated_file_loads_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "master.keys"
    key_id = MasterKeys.generate_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = MasterKeys.load(path)
    assert keys.current_id == key_id
    assert list(keys.keys) == [key_id]
    with pytest.raises(FileExistsError):
        MasterKeys.generate_file(path)
    assert MasterKeys.load(path) == keys


def test_rotation_keeps_old_seals_readable_and_rewrap_moves_them(tmp_path: Path) -> None:
    path = tmp_path / "master.keys"
    old_id = MasterKeys.generate_file(path)
    old_seal = seal(MasterKeys.load(path), b"secret", CONTEXT)
    path.chmod(0o640)

    new_id = MasterKeys.rotate_file(path)
    assert new_id != old_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the service's group keeps access
    assert [p.name for p in tmp_path.iterdir()] == ["master.keys"]  # no temporary file left
    keys = MasterKeys.load(path)
    assert list(keys.keys) == [old_id, new_id]
    assert keys.current_id == new_id
    assert seal(keys, b"x", CONTEXT).key_id == new_id
    assert envelope.open(keys, old_seal, CONTEXT) == b"secret"

    moved = rewrap(keys, old_seal, CONTEXT)
    assert moved.key_id == new_id
    assert moved.ciphertext == old_seal.ciphertext
    only_new = MasterKeys({new_id: keys.keys[new_id]}, current_id=new_id)
    assert envelope.open(only_new, moved, CONTEXT) == b"secret"
    with pytest.raises(EnvelopeError):
        envelope.open(only_new, old_seal, CONTEXT)


def test_rotation_refuses_a_broken_file_and_leaves_it_alone(tmp_path: Path) -> None:
    path = _key_file(tmp_path, "k1:not base64!\n")
    with pytest.raises(KeyFileError):
        MasterKeys.rotate_file(path)
    assert path.read_text() == "k1:not base64!\n"


def test_rotation_appends_after_a_last_line_without_newline(tmp_path: Path) -> None:
    path = _key_file(tmp_path, _line("k1", b"\x01" * 32).rstrip("\n"))
    new_id = MasterKeys.rotate_file(path)
    assert list(MasterKeys.load(path).keys) == ["k1", new_id]


def test_the_last_line_is_the_current_key(tmp_path: Path) -> None:
    path = _key_file(tmp_path, _line("b", b"\x02" * 32) + "\n" + _line("a", b"\x01" * 32))
    keys = MasterKeys.load(path)
    assert keys.current_id == "a"
    assert keys.keys == {"b": b"\x02" * 32, "a": b"\x01" * 32}


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o602, 0o620, 0o601])
def test_a_key_file_others_can_reach_is_refused(tmp_path: Path, mode: int) -> None:
    path = _key_file(tmp_path, _line("k1", b"\x01" * 32), mode)
    with pytest.raises(KeyFileError, match=f"{mode:04o}"):
        MasterKeys.load(path)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400, 0o440])
def test_a_private_key_file_is_accepted(tmp_path: Path, mode: int) -> None:
    path = _key_file(tmp_path, _line("k1", b"\x01" * 32), mode)
    assert MasterKeys.load(path).current_id == "k1"


SECRET_KEY = b"\xaa" * 31 + b"\xbb"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no key"),
        ("\n\n", "no key"),
        (_line("k1", SECRET_KEY) + "k2\n", "line 2: expected KEYID:BASE64"),
        (_line("k1", SECRET_KEY) + _line("bad id", SECRET_KEY), "line 2: expected KEYID"),
        (_line("k1", SECRET_KEY) + _line("k1", SECRET_KEY), "line 2: key id 'k1' appears twice"),
        (_line("k1", SECRET_KEY)[:-3] + "!!\n", "line 1: the key is not valid base64"),
        (_line("k1", SECRET_KEY[:16]), "line 1: the key is 16 bytes, expected 32"),
        (_line("k1", SECRET_KEY + b"\x00"), "line 1: the key is 33 bytes"),
        ("k1:\u00e9\n", "not an ASCII text file"),
    ],
)
def test_malformed_key_files_are_refused_without_showing_keys(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _key_file(tmp_path, text)
    with pytest.raises(KeyFileError, match=message) as info:
        MasterKeys.load(path)
    shown = str(info.value)
    assert base64.b64encode(SECRET_KEY).decode()[:8] not in shown
    assert str(path) in shown


def test_a_missing_key_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        MasterKeys.load(tmp_path / "absent")


def test_master_keys_never_show_key_material() -> None:
    keys = MasterKeys({"k1": b"\xfe" * 32}, current_id="k1")
    assert "xfe" not in repr(keys)
    assert "k1" in repr(keys)

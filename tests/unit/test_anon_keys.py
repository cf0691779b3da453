"""The onion and I2P key and address code (ddmail_common.anon_keys), against keys and addresses
tor 0.4.9 and i2pd 2.45 made themselves, RFC 8032's vector, and OpenSSL's RFC 3526 prime."""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import io
import json
import os
import stat
from pathlib import Path

import pytest

from ddmail_common import anon_keys

# Captured from `tor --defaults-torrc /dev/null -f torrc` with DisableNetwork 1 (a throwaway
# key): its hs_ed25519_secret_key, and the hostname tor wrote next to it.
TOR_SECRET_KEY = bytes.fromhex(
    "3d3d206564323535313976312d7365637265743a207479706530203d3d000000a0aa20a77225738b99c50bf6"
    "5c325b31c1e45ae855d99389f13511afbe074774f86a8dcdfdd02871604bb0f18e2b1fdf83cf3f8d05869cca"
    "85bd08927455d339"
)
TOR_HOSTNAME = "n7ksxshka7zwuraelcyaco3jik6ctw47ilrhtspmw5tccnoh4alyolqd.onion"
# Captured from i2pd inside `unshare --net` (a throwaway destination): the keys file of a
# server tunnel, and the name i2pd logged ("New private keys file ... for NAME created").
I2PD_KEYS = base64.b64decode(
    "pjO2qB/x4fIRrIWnU6wk0ce1zM40Q0Jf1DldntnQ/dGmM7aoH/Hh8hGshadTrCTRx7XMzjRDQl/UOV2e2dD90aYz"
    "tqgf8eHyEayFp1OsJNHHtczONENCX9Q5XZ7Z0P3RpjO2qB/x4fIRrIWnU6wk0ce1zM40Q0Jf1DldntnQ/dGmM7ao"
    "H/Hh8hGshadTrCTRx7XMzjRDQl/UOV2e2dD90aYztqgf8eHyEayFp1OsJNHHtczONENCX9Q5XZ7Z0P3RpjO2qB/x"
    "4fIRrIWnU6wk0ce1zM40Q0Jf1DldntnQ/dGmM7aoH/Hh8hGshadTrCTRx7XMzjRDQl/UOV2e2dD90aYztqgf8eHy"
    "EayFp1OsJNHHtczONENCX9Q5XZ7Z0P3RpjO2qB/x4fIRrIWnU6wk0ce1zM40Q0Jf1DldntnQ/dGmM7aoH/Hh8hGs"
    "hadTrCTRx7XMzjRDQl/UOV2e2dD90YH/jcotii9ktO0VEnaX/sZ4ENbGVhodhzxwd3J4a1qvBQAEAAcAAJ1/HhBR"
    "hE8valiWxoANEXvhjr7IhopAOlsIF1X3Pyrl3OUs7EKXol59g0klcIYpyjcT3GygQ+yjRDHuBeTgaN7B1mm9E9+c"
    "FLTrky6TsCP0pQlJknmazkGKmV8CYLk2ZzWLQToB0S9BmzHrsLaq9JkAcPoonw7vJJpn58pd4tTau+CYsBpZB3+9"
    "P9WK43guXfz+HreDi/cxhQMnjlHBKl6xcbDodx3DaS1SnuGqfUPX1PB61MmDgyAhSJxObXQfoBNi9uIdWQ/rmcXz"
    "htC9njIeuIjXyiO24dr4n8a8X6M3nN9eOaI2U8D82I4swttm4cCyr6esP+BHml4l97kS27YWTRU9sAE2t2ctbaEL"
    "05XNFo2cwdiIBlt+nBY9b6HjXA=="
)
I2PD_ADDRESS = "72pmtcpo46yzczynuma2s232l5emxrlqok3uzt6toaivul2afaeq.b32.i2p"


def test_ed25519_public_key_matches_rfc_8032() -> None:
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert anon_keys.ed25519_public_key(anon_keys._expand_seed(seed)).hex() == public


def test_onion_address_of_a_key_tor_made() -> None:
    assert anon_keys.onion_address(anon_keys.tor_public_key(TOR_SECRET_KEY)) == TOR_HOSTNAME


def test_b32_of_a_destination_i2pd_made() -> None:
    assert anon_keys.check_i2p_keys(I2PD_KEYS) == I2PD_ADDRESS
    assert len(anon_keys.i2p_destination(I2PD_KEYS)) == 391


def test_the_elgamal_group_is_rfc_3526s_2048_bit_prime() -> None:
    libcrypto = ctypes.CDLL(ctypes.util.find_library("crypto") or "libcrypto.so.3")
    libcrypto.BN_get_rfc3526_prime_2048.restype = ctypes.c_void_p
    libcrypto.BN_bn2hex.restype = ctypes.c_void_p
    libcrypto.BN_bn2hex.argtypes = [ctypes.c_void_p]
    libcrypto.BN_free.argtypes = [ctypes.c_void_p]
    libcrypto.CRYPTO_free.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    bignum = libcrypto.BN_get_rfc3526_prime_2048(None)
    text = libcrypto.BN_bn2hex(bignum)
    try:
        assert int(ctypes.string_at(text).decode(), 16) == anon_keys.ELGAMAL_PRIME
    finally:
        libcrypto.CRYPTO_free(text, b"", 0)
        libcrypto.BN_free(bignum)


def _private_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "onion"
    directory.mkdir(mode=0o700, parents=True)
    return directory


def test_onion_keys_are_made_once_and_kept(tmp_path: Path) -> None:
    directory = _private_dir(tmp_path)
    address, changed = anon_keys.install_onion_keys(directory, None)
    assert changed and address.endswith(".onion") and len(address) == 62
    assert (directory / "hostname").read_text() == address + "\n"
    for name in ("hs_ed25519_secret_key", "hs_ed25519_public_key", "hostname"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    assert anon_keys.install_onion_keys(directory, None) == (address, False)
    assert anon_keys.onion_address_of_dir(directory) == address
    assert not any(p.name.endswith(".tmp") for p in directory.iterdir())


def test_an_imported_onion_key_replaces_the_one_there(tmp_path: Path) -> None:
    directory = _private_dir(tmp_path)
    anon_keys.install_onion_keys(directory, None)
    assert anon_keys.install_onion_keys(directory, TOR_SECRET_KEY) == (TOR_HOSTNAME, True)
    assert (directory / "hs_ed25519_secret_key").read_bytes() == TOR_SECRET_KEY
    assert anon_keys.install_onion_keys(directory, TOR_SECRET_KEY) == (TOR_HOSTNAME, False)


def test_keys_that_do_not_belong_together_are_refused(tmp_path: Path) -> None:
    directory = _private_dir(tmp_path)
    anon_keys.install_onion_keys(directory, TOR_SECRET_KEY)
    other = _private_dir(tmp_path / "other")
    anon_keys.install_onion_keys(other, None)
    (directory / "hs_ed25519_public_key").write_bytes(
        (other / "hs_ed25519_public_key").read_bytes()
    )
    with pytest.raises(anon_keys.KeyFileError, match="does not belong"):
        anon_keys.onion_address_of_dir(directory)
    with pytest.raises(anon_keys.KeyFileError, match="not a Tor"):
        anon_keys.install_onion_keys(directory, TOR_SECRET_KEY[1:])
    broken = bytearray(I2PD_KEYS)
    broken[-1] ^= 1  # the ed25519 seed no longer matches the destination's signing key
    with pytest.raises(anon_keys.KeyFileError, match="signing keys"):
        anon_keys.check_i2p_keys(bytes(broken))
    with pytest.raises(anon_keys.KeyFileError, match="wrong length"):
        anon_keys.check_i2p_keys(I2PD_KEYS + b"x")


def test_i2p_keys_are_made_as_i2pd_makes_them(tmp_path: Path) -> None:
    path = tmp_path / "ddmail.dat"
    address, changed = anon_keys.install_i2p_keys(path, None)
    keys = path.read_bytes()
    assert changed and len(keys) == len(I2PD_KEYS) == 679
    # The key certificate of i2pd's own server tunnel keys: EdDSA-Ed25519 (7), ElGamal (0).
    assert keys[384:391] == I2PD_KEYS[384:391]
    assert address == anon_keys.i2p_address(keys[:391]) and address.endswith(".b32.i2p")
    # A real ElGamal pair (i2pd fills these fields with random bytes).
    private = int.from_bytes(keys[391 : 391 + 256], "big")
    assert pow(2, private, anon_keys.ELGAMAL_PRIME).to_bytes(256, "big") == keys[:256]
    assert anon_keys.install_i2p_keys(path, None) == (address, False)
    assert anon_keys.install_i2p_keys(path, I2PD_KEYS) == (I2PD_ADDRESS, True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = ""
) -> tuple[int, dict[str, object], str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = anon_keys.main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out) if out else {}, err


def test_the_command_line_takes_keys_on_stdin_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = _private_dir(tmp_path)
    secret = base64.b64encode(TOR_SECRET_KEY).decode()
    code, out, _ = _run(monkeypatch, capsys, "onion-keys", str(directory), "--import", stdin=secret)
    assert (code, out) == (0, {"address": TOR_HOSTNAME, "changed": True})
    code, out, _ = _run(monkeypatch, capsys, "onion-address", str(directory))
    assert (code, out) == (0, {"address": TOR_HOSTNAME, "changed": False})
    keys = base64.b64encode(I2PD_KEYS).decode()
    path = tmp_path / "ddmail.dat"
    code, out, _ = _run(monkeypatch, capsys, "i2p-keys", str(path), "--import", stdin=keys)
    assert (code, out) == (0, {"address": I2PD_ADDRESS, "changed": True})
    code, out, _ = _run(monkeypatch, capsys, "i2p-address", str(path))
    assert (code, out) == (0, {"address": I2PD_ADDRESS, "changed": False})
    # Garbage is refused without touching the keys, and is not echoed.
    code, out, err = _run(monkeypatch, capsys, "i2p-keys", str(path), "--import", stdin="@@secret")
    assert code == 1 and not out and "secret" not in err.replace("ddmail-anon-keys", "")
    assert path.read_bytes() == I2PD_KEYS


def test_files_take_the_owner_of_their_directory(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give files away")
    directory = _private_dir(tmp_path)
    os.chown(directory, 65534, 65534)
    anon_keys.install_onion_keys(directory, None)
    assert {(p.stat().st_uid, p.stat().st_gid) for p in directory.iterdir()} == {(65534, 65534)}

"""TOTP: RFC 6238 codes, a window for clock drift, and no code accepted twice."""

from __future__ import annotations

import base64
import struct
import zlib
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ddmail_web.totp import code_at, new_secret, provisioning_uri, qr_png, verify

# RFC 6238 Appendix B: the SHA-1 rows use the ASCII key "12345678901234567890". The RFC lists
# 8-digit codes; a 6-digit code is the same value mod 10**6, its last six digits.
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]
secrets_ = st.binary(min_size=10, max_size=40).map(lambda b: base64.b32encode(b).decode())
times = st.integers(min_value=90, max_value=2**40)


@pytest.mark.parametrize(("t", "rfc_code"), RFC_VECTORS)
def test_rfc_6238_sha1_vectors(t: int, rfc_code: str) -> None:
    assert code_at(RFC_SECRET, t) == rfc_code[-6:]
    assert verify(RFC_SECRET, rfc_code[-6:], t, None) == t // 30


def test_secrets_are_160_bit_base32() -> None:
    secret = new_secret()
    assert len(secret) == 32
    assert len(base64.b32decode(secret)) == 20
    assert new_secret() != secret


def test_secrets_typed_by_hand_are_understood() -> None:
    spaced = " ".join(RFC_SECRET[i : i + 4] for i in range(0, len(RFC_SECRET), 4)).lower()
    assert code_at(spaced, 59) == "287082"
    unpadded = base64.b32encode(b"0123456789").decode()  # 16 characters, no padding needed
    assert code_at(unpadded.rstrip("="), 59) == code_at(unpadded, 59)


@pytest.mark.parametrize("secret", ["", "not base32!", "A"])
def test_a_broken_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValueError):
        code_at(secret, 0)
    with pytest.raises(ValueError):
        verify(secret, "123456", 0, None)


@given(secret=secrets_, t=times)
def test_the_current_code_verifies_once(secret: str, t: int) -> None:
    step = verify(secret, code_at(secret, t), t, None)
    assert step == t // 30
    assert verify(secret, code_at(secret, t), t, step) is None  # replay refused


@given(secret=secrets_, t=times, offset=st.integers(-1, 1))
def test_the_window_accepts_neighbouring_steps(secret: str, t: int, offset: int) -> None:
    now = t + offset * 30
    assert verify(secret, code_at(secret, t), now, None) == t // 30
    assert verify(secret, code_at(secret, t), now, None, window=0) in (None, now // 30)


def test_codes_outside_the_window_are_refused() -> None:
    t = 1_700_000_000
    for offset in (-2, 2, 10):
        assert verify(RFC_SECRET, code_at(RFC_SECRET, t + offset * 30), t, None) is None
    assert verify(RFC_SECRET, code_at(RFC_SECRET, t - 60), t, None, window=2) == t // 30 - 2


def test_steps_up_to_the_last_used_one_are_refused() -> None:
    t = 1_700_000_000
    step = t // 30
    previous, current, following = (code_at(RFC_SECRET, t + d * 30) for d in (-1, 0, 1))
    assert verify(RFC_SECRET, previous, t, step - 1) is None
    assert verify(RFC_SECRET, current, t, step) is None
    assert verify(RFC_SECRET, following, t, step) == step + 1
    assert verify(RFC_SECRET, current, t, step - 1) == step


def test_codes_are_normalised_and_checked() -> None:
    t = 59
    assert verify(RFC_SECRET, "287 082", t, None) == 1
    assert verify(RFC_SECRET, " 287082 ", t, None) == 1
    for bad in ("28708", "2870822", "28708a", "+87082", "٢٨٧٠٨٢", "²87082", "287\t082", ""):
        assert verify(RFC_SECRET, bad, t, None) is None


def test_time_zero_and_a_negative_window() -> None:
    assert verify(RFC_SECRET, code_at(RFC_SECRET, 0), 0, None) == 0
    with pytest.raises(ValueError):
        code_at(RFC_SECRET, -1)
    with pytest.raises(ValueError):
        verify(RFC_SECRET, "123456", 59, None, window=-1)


def test_provisioning_uri_is_percent_encoded() -> None:
    secret = new_secret()
    uri = provisioning_uri(secret, "alice smith@example.org", issuer="DD Mail & Co")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert parts.path == "/DD%20Mail%20%26%20Co:alice%20smith%40example.org"
    assert unquote(parts.path) == "/DD Mail & Co:alice smith@example.org"
    assert "+" not in uri
    query = parse_qs(parts.query, strict_parsing=True)
    assert query == {
        "secret": [secret],
        "issuer": ["DD Mail & Co"],
        "algorithm": ["SHA1"],
        "digits": ["6"],
        "period": ["30"],
    }


def test_provisioning_uri_refuses_colons_and_broken_secrets() -> None:
    with pytest.raises(ValueError):
        provisioning_uri(new_secret(), "a:b")
    with pytest.raises(ValueError):
        provisioning_uri(new_secret(), "alice", issuer="x:y")
    with pytest.raises(ValueError):
        provisioning_uri("not base32!", "alice")


def test_qr_png_is_a_png_at_scale_5() -> None:
    png = qr_png(provisioning_uri(new_secret(), "alice@example.org"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", png[8:16])
    assert (length, kind) == (13, b"IHDR")
    width, height = struct.unpack(">II", png[16:24])
    assert width == height
    # Some QR version (21 + 4v modules) plus a 4-module quiet zone each side, 5 px per module.
    modules = width // 5 - 8
    assert width % 5 == 0
    assert modules >= 21
    assert (modules - 21) % 4 == 0
    assert zlib.crc32(png[12:29]) == struct.unpack(">I", png[29:33])[0]

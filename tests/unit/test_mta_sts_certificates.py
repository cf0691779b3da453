"""`ddmail admin mta-sts certificates` (DN 40): what the root-run job asks the issuing program
for, given the hosts the backend serves and the files present; failures back off (ACME CAs
limit failed validations), and the main certificate's names are left to it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ddmail_admin.mta_sts import BUSY, HOST, RETRY_AFTER_SECONDS, covered, sync

NOW = 1_800_000_000.0


class Issuer:
    """The issuing program: records each call, leaves the files a real one would."""

    def __init__(self, directory: Path, fail: set[str] | None = None) -> None:
        self.directory, self.fail, self.calls = directory, fail or set(), list[tuple[str, str]]()
        self.busy = False

    def __call__(self, action: str, host: str) -> int:
        self.calls.append((action, host))
        if self.busy:
            return BUSY
        if host in self.fail:
            return 1
        for suffix in (".pem", ".key"):
            path = self.directory / f"{host}{suffix}"
            if action == "issue":
                path.write_text(host)
            else:
                path.unlink(missing_ok=True)
        return 0


def test_missing_certificates_are_issued_once_and_gone_hosts_removed(tmp_path: Path) -> None:
    issuer = Issuer(tmp_path)
    (tmp_path / "mta-sts.gone.example.pem").write_text("old")
    (tmp_path / "mta-sts.gone.example.key").write_text("old")
    assert sync(["mta-sts.b.example", "mta-sts.a.example"], tmp_path, issuer, NOW) == (
        ["issued mta-sts.a.example", "issued mta-sts.b.example", "removed mta-sts.gone.example"],
        [],
        [],
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mta-sts.a.example.key",
        "mta-sts.a.example.pem",
        "mta-sts.b.example.key",
        "mta-sts.b.example.pem",
    ]
    issuer.calls.clear()
    assert sync(["mta-sts.a.example", "mta-sts.b.example"], tmp_path, issuer, NOW) == ([], [], [])
    assert issuer.calls == []


def test_a_failed_host_is_tried_again_only_after_the_back_off(tmp_path: Path) -> None:
    issuer = Issuer(tmp_path, fail={"mta-sts.late.example"})
    assert sync(["mta-sts.late.example"], tmp_path, issuer, NOW) == (
        [],
        ["mta-sts.late.example"],
        [],
    )
    marker = tmp_path / ".mta-sts.late.example.failed"
    assert marker.exists()
    marked = marker.stat().st_mtime
    assert sync(["mta-sts.late.example"], tmp_path, issuer, marked + 60) == ([], [], [])
    assert len(issuer.calls) == 1
    issuer.fail.clear()
    later = marked + RETRY_AFTER_SECONDS + 1
    assert sync(["mta-sts.late.example"], tmp_path, issuer, later) == (
        ["issued mta-sts.late.example"],
        [],
        [],
    )
    assert not marker.exists()


def test_a_host_not_tried_because_certbot_was_busy_is_tried_on_the_next_run(
    tmp_path: Path,
) -> None:
    issuer = Issuer(tmp_path)
    issuer.busy = True
    assert sync(["mta-sts.a.example"], tmp_path, issuer, NOW) == ([], [], ["mta-sts.a.example"])
    assert not (tmp_path / ".mta-sts.a.example.failed").exists()
    issuer.busy = False
    assert sync(["mta-sts.a.example"], tmp_path, issuer, NOW + 60) == (
        ["issued mta-sts.a.example"],
        [],
        [],
    )


def test_a_program_that_says_ok_but_leaves_no_certificate_failed(tmp_path: Path) -> None:
    def liar(action: str, host: str) -> int:
        return 0

    assert sync(["mta-sts.a.example"], tmp_path, liar, NOW) == ([], ["mta-sts.a.example"], [])


def test_the_markers_of_hosts_no_longer_served_are_dropped(tmp_path: Path) -> None:
    (tmp_path / ".mta-sts.gone.example.failed").touch()
    assert sync([], tmp_path, Issuer(tmp_path), NOW) == ([], [], [])
    assert list(tmp_path.iterdir()) == []


def test_only_policy_host_names_become_files_or_arguments() -> None:
    assert HOST.fullmatch("mta-sts.customer.example")
    for bad in (
        "customer.example",
        "mta-sts.",
        "mta-sts.a/../b",
        "mta-sts.-a.example",
        "mta-sts.a..b",
    ):
        assert not HOST.fullmatch(bad), bad


def test_names_the_main_certificate_holds_need_none_of_their_own(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example")])
    now = dt.datetime.now(dt.UTC)
    sans = [x509.DNSName(n) for n in ("mail.example", "MTA-STS.example")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "mail.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert covered(path) == {"mail.example", "mta-sts.example"}
    assert covered(None) == set() and covered(tmp_path / "absent.pem") == set()

"""The TLS key rollover's steps and refusals without daemons (DN 42): the files each step
leaves, the records `dns zone` prints meanwhile, and that a failed step changes nothing."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from ddmail_admin import tlsrollover
from ddmail_admin.dnszone import render, tlsa_3_1_1
from ddmail_admin.tls_files import TlsFiles
from ddmail_common.config import Config, TlsSettings
from ddmail_stack.tls import issue, make_ca
from tests.unit.test_dns_zone import config
from tests.zonefile import answers, parsed

NAMES = ["mx.example.net", "mail.example.net"]
ISSUE = """
import os, sys
from pathlib import Path
from ddmail_stack.tls import issue
names = sys.argv[2:]
issue(Path(sys.argv[1] + "/ca.pem"), Path(sys.argv[1] + "/ca.key"),
      Path(os.environ["DDMAIL_TLS_NEXT_CERTIFICATE"]), Path(os.environ["DDMAIL_TLS_NEXT_KEY"]),
      names)
"""


def setup(tmp_path: Path, names: list[str] = NAMES, reload_ok: bool = True) -> Config:
    make_ca(tmp_path / "ca.pem", tmp_path / "ca.key")
    issue(
        tmp_path / "ca.pem",
        tmp_path / "ca.key",
        tmp_path / "mail.pem",
        tmp_path / "mail.key",
        NAMES,
    )
    script = tmp_path / "issue.py"
    script.write_text(ISSUE)
    marker = tmp_path / "reloads"
    reload = ["/bin/sh", "-c", f"echo >> {marker}; exit {0 if reload_ok else 1}"]
    return dataclasses.replace(
        config(),
        dns_ttl=60,
        tls=TlsSettings(
            certificate=tmp_path / "mail.pem",
            key=tmp_path / "mail.key",
            issue_command=(sys.executable, str(script), str(tmp_path), *names),
            reload_command=tuple(reload),
            switch_margin_seconds=600,
        ),
    )


def tlsa_digests(cfg: Config) -> set[str]:
    zone = parsed(render(cfg, ["example.net"]))
    return {r.split()[-1] for r in answers(zone, "_25._tcp.mx.example.net.", "TLSA")}


def digest(path: Path) -> str:
    return tlsa_3_1_1(path.read_bytes()).split()[-1]


def test_prepare_switch_finish_publish_both_keys_only_while_needed(tmp_path: Path) -> None:
    cfg = setup(tmp_path)
    files = TlsFiles.of(cfg.tls)
    old = digest(files.certificate)
    records = tlsrollover.prepare(cfg, now=1000)
    new = digest(files.next_certificate)
    assert {r.data.split()[-1] for r in records} == {new}
    assert tlsa_digests(cfg) == {old, new}
    with pytest.raises(tlsrollover.RolloverError, match="too early"):
        tlsrollover.switch(cfg, now=1000 + 60 + 599)
    assert digest(files.certificate) == old
    tlsrollover.switch(cfg, now=1000 + 60 + 600, check_dns=False)
    assert digest(files.certificate) == new and digest(files.previous_certificate) == old
    assert (tmp_path / "reloads").read_text().count("\n") == 1
    assert tlsa_digests(cfg) == {old, new}
    gone = tlsrollover.finish(cfg)
    assert {r.data.split()[-1] for r in gone} == {old}
    assert tlsa_digests(cfg) == {new}
    assert tlsrollover.status(cfg) == "no rollover under way"


def test_a_failed_reload_puts_the_served_pair_back(tmp_path: Path) -> None:
    cfg = setup(tmp_path, reload_ok=False)
    files = TlsFiles.of(cfg.tls)
    served = (files.certificate.read_bytes(), files.key.read_bytes())
    tlsrollover.prepare(cfg, now=0)
    prepared = files.next_certificate.read_bytes()
    with pytest.raises(tlsrollover.RolloverError, match="reload_command failed"):
        tlsrollover.switch(cfg, now=10_000, check_dns=False)
    assert (files.certificate.read_bytes(), files.key.read_bytes()) == served
    assert files.next_certificate.read_bytes() == prepared
    assert not files.previous_certificate.exists()
    assert "prepared" in tlsrollover.status(cfg)


def test_a_next_certificate_missing_a_served_name_is_refused(tmp_path: Path) -> None:
    cfg = setup(tmp_path, names=NAMES[:1])
    with pytest.raises(tlsrollover.RolloverError, match=r"lacks the names mail\.example\.net"):
        tlsrollover.prepare(cfg)
    files = TlsFiles.of(cfg.tls)
    assert not files.next_certificate.exists() and not files.next_key.exists()
    assert not files.state.exists()


def test_a_failing_issue_command_leaves_nothing(tmp_path: Path) -> None:
    cfg = setup(tmp_path)
    cfg = dataclasses.replace(
        cfg,
        tls=dataclasses.replace(cfg.tls, issue_command=("/bin/sh", "-c", "echo no CA >&2; exit 3")),
    )
    with pytest.raises(tlsrollover.RolloverError, match="no CA"):
        tlsrollover.prepare(cfg)
    assert tlsrollover.status(cfg) == "no rollover under way"


def test_steps_out_of_order_are_refused(tmp_path: Path) -> None:
    cfg = setup(tmp_path)
    with pytest.raises(tlsrollover.RolloverError, match="prepare first"):
        tlsrollover.switch(cfg, check_dns=False)
    with pytest.raises(tlsrollover.RolloverError, match="switch has not happened"):
        tlsrollover.finish(cfg)
    tlsrollover.prepare(cfg, now=0)
    with pytest.raises(tlsrollover.RolloverError, match="under way"):
        tlsrollover.prepare(cfg)
    with pytest.raises(tlsrollover.RolloverError, match="switch has not happened"):
        tlsrollover.finish(cfg)


def test_the_switch_waits_for_dns_when_nothing_answers(tmp_path: Path) -> None:
    """A resolver that does not answer (here: none on that port) never lets the switch go."""
    cfg = setup(tmp_path)
    cfg = dataclasses.replace(cfg, tls=dataclasses.replace(cfg.tls, resolver=("127.0.0.1", 9)))
    tlsrollover.prepare(cfg, now=0)
    with pytest.raises(tlsrollover.RolloverError, match="DNS does not serve the next key"):
        tlsrollover.switch(cfg, now=10_000)
    assert "prepared" in tlsrollover.status(cfg)

"""The production systemd units (ansible/roles/ddmail_services) parse, and run the command the
local stack's periodic thread runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ddmail_stack.mta import template_env

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "ddmail_services"
UNITS = (
    "ddmail-periodic.service",
    "ddmail-periodic.timer",
    "ddmail-milter.service",
    "ddmail-pgpstage.service",
)


def _defaults() -> set[str]:
    text = (ROLE / "defaults" / "main.yml").read_text()
    return set(re.findall(r"^([a-z_]+):", text, flags=re.MULTILINE))


def _render(tmp_path: Path, **overrides: object) -> Path:
    variables: dict[str, object] = {
        "ddmail_bin_dir": str(Path(sys.executable).parent),  # this checkout's `ddmail`
        "ddmail_config_file": "/etc/ddmail/ddmail.toml",
        "ddmail_web_user": "root",
        "ddmail_web_group": "root",
        "ddmail_periodic_writable_paths": ["/var/lib/ddmail"],
        "ddmail_periodic_schedule": "*:0/5",
        "ddmail_milter_user": "root",
        "ddmail_milter_group": "root",
        "ddmail_milter_writable_paths": ["/var/lib/ddmail"],
        "ddmail_pgpstage_user": "root",
        **overrides,
    }
    assert set(variables) == _defaults(), "every template variable must have a default"
    env = template_env("ddmail_services")  # as the stack renders the other roles
    for unit in UNITS:
        (tmp_path / unit).write_text(env.get_template(f"{unit}.j2").render(variables))
    return tmp_path


def _verify(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(directory / u) for u in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_periodic_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    result = _verify(_render(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "ddmail-periodic" not in result.stderr, result.stderr
    service = (tmp_path / "ddmail-periodic.service").read_text()
    assert "admin billing run --config /etc/ddmail/ddmail.toml" in service
    assert "ReadWritePaths=/var/lib/ddmail" in service


def test_openpgp_stage_unit_runs_the_stage_with_postfix_as_its_only_client(
    tmp_path: Path,
) -> None:
    """Production has the stage between Postfix and Dovecot, as the local stack does."""
    unit = (_render(tmp_path) / "ddmail-pgpstage.service").read_text()
    assert f"{Path(sys.executable).parent}/ddmail-pgpstage --config" in unit
    assert "SupplementaryGroups=postfix" in unit
    assert Path(sys.executable).with_name("ddmail-pgpstage").exists()


def test_a_bad_schedule_is_caught_by_the_same_check(tmp_path: Path) -> None:
    """Guards the test above: the check does reject a broken unit."""
    result = _verify(_render(tmp_path, ddmail_periodic_schedule="every tuesday-ish"))
    assert result.returncode != 0
    assert "calendar specification" in result.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_rendered_units_hold_no_unexpanded_template(tmp_path: Path, unit: str) -> None:
    text = (_render(tmp_path) / unit).read_text()
    assert "{{" not in text and "{%" not in text


def test_milter_unit_runs_the_milter_and_gives_its_socket_to_postfix_only(tmp_path: Path) -> None:
    service = (_render(tmp_path) / "ddmail-milter.service").read_text()
    assert (
        f"{Path(sys.executable).parent}/ddmail-milter --config /etc/ddmail/ddmail.toml" in service
    )
    assert "RuntimeDirectory=ddmail-milter" in service
    assert "ExecStartPre=+/bin/chgrp postfix /run/ddmail-milter" in service
    assert "CapabilityBoundingSet=\n" in service and "NoNewPrivileges=yes" in service

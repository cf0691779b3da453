"""The production systemd units (ansible/roles/ddmail/templates) parse, run the commands the
local stack runs, and are hardened: `systemd-analyze security --offline` rates each DDMail
service at most 3.9 ("OK" or better)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ddmail_stack.templates import template_env
from tests.systemd_security import DDMAIL_SERVICES, DDMAIL_UNITS, MAX_EXPOSURE, exposure

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "ddmail"
SERVICES = DDMAIL_SERVICES
UNITS = DDMAIL_UNITS
# Processes that need no network beyond loopback (the backend asks DNS; the backup is root).
NO_NETWORK = (
    "ddmail-web.service",
    "ddmail-keyhandler.service",
    "ddmail-pgpstage.service",
    "ddmail-milter.service",
    "ddmail-tlsrpt.service",
    "ddmail-periodic.service",
    "ddmail-backup.service",
)
# The unit templates' variables come first in defaults/main.yml, up to this line.
UNIT_VARS_END = "# --- install and config (not used by the unit templates) ---"


def _defaults() -> set[str]:
    text = (ROLE / "defaults" / "main.yml").read_text().split(f"\n{UNIT_VARS_END}\n")[0]
    return set(re.findall(r"^([a-z_]+):", text, flags=re.MULTILINE))


def _render(tmp_path: Path, **overrides: object) -> Path:
    variables: dict[str, object] = {
        "ddmail_bin_dir": str(Path(sys.executable).parent),  # this checkout's console scripts
        "ddmail_config_file": "/etc/ddmail/ddmail.toml",
        # Users that exist on any test machine (verify checks User= names exist offline).
        "ddmail_web_user": "root",
        "ddmail_backend_user": "root",
        "ddmail_keyhandler_user": "root",
        "ddmail_admin_user": "root",
        "ddmail_pgpstage_user": "root",
        "ddmail_milter_user": "root",
        "ddmail_milter_group": "root",
        "ddmail_tlsrpt_user": "root",
        "ddmail_mail_root": "/var/lib/ddmail/mail",
        "ddmail_backup_dir": "/var/lib/ddmail/backups",
        "ddmail_dkim_key_dir": "/var/lib/ddmail/dkim",
        "ddmail_writable_paths": ["/var/lib/ddmail/sqlite"],
        "ddmail_milter_writable_paths": ["/var/lib/ddmail/sqlite"],
        "ddmail_periodic_writable_paths": ["/var/lib/ddmail"],
        "ddmail_periodic_schedule": "*:0/5",
        "ddmail_backup_schedule": "*-*-* 03:15:00",
        "ddmail_zone_key_dir": "/var/lib/ddmail/dnssec",
        "ddmail_zone_signed_dir": "/var/lib/ddmail/zones",
        "ddmail_zone_sign_schedule": "daily",
        "ddmail_postfix_reload_flag": "/run/ddmail-backend/postfix-reload",
        **overrides,
    }
    assert set(variables) == _defaults(), "every unit template variable must have a default"
    env = template_env("ddmail")  # as the stack renders the other roles
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


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    result = _verify(_render(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "ddmail-" not in result.stderr, result.stderr
    service = (tmp_path / "ddmail-periodic.service").read_text()
    assert "admin billing run --config /etc/ddmail/ddmail.toml" in service
    assert "ReadWritePaths=/var/lib/ddmail" in service
    backup = (tmp_path / "ddmail-backup.service").read_text()
    assert "ddmail admin backup create --config /etc/ddmail/ddmail.toml" in backup


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_is_rated_ok_or_better(tmp_path: Path, service: str) -> None:
    assert exposure(_render(tmp_path) / service) <= MAX_EXPOSURE


def test_the_rating_tells_an_unhardened_unit_apart(tmp_path: Path) -> None:
    """Guards the test above: the same check rejects a unit without the hardening."""
    unit = tmp_path / "plain.service"
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    assert exposure(unit) > MAX_EXPOSURE


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_runs_under_its_apparmor_profile(tmp_path: Path, service: str) -> None:
    text = (_render(tmp_path) / service).read_text()
    name = service.removesuffix(".service")
    profile = "ddmail-admin" if name == "ddmail-periodic" else name
    assert f"\nAppArmorProfile={profile}\n" in text


@pytest.mark.parametrize("service", NO_NETWORK)
def test_services_without_network_need_get_none(tmp_path: Path, service: str) -> None:
    text = (_render(tmp_path) / service).read_text()
    assert "\nIPAddressDeny=any\n" in text
    assert "AF_INET6" not in text
    if "PrivateNetwork=yes" not in text:  # the keyhandler's unlock port is on loopback
        assert "\nIPAddressAllow=localhost\n" in text


def test_openpgp_stage_unit_runs_the_stage_with_postfix_as_its_only_client(
    tmp_path: Path,
) -> None:
    """Production has the stage between Postfix and Dovecot, as the local stack does."""
    unit = (_render(tmp_path) / "ddmail-pgpstage.service").read_text()
    assert f"{Path(sys.executable).parent}/ddmail-pgpstage --config" in unit
    assert "SupplementaryGroups=postfix" in unit
    assert Path(sys.executable).with_name("ddmail-pgpstage").exists()


def test_a_bad_schedule_is_caught_by_the_same_check(tmp_path: Path) -> None:
    """Guards the verify test: the check does reject a broken unit."""
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
    # It hands its socket (0660) to group postfix itself (ddmail_common/socket_daemon.py).
    assert "SupplementaryGroups=postfix" in service
    assert "CapabilityBoundingSet=\n" in service and "NoNewPrivileges=yes" in service


@pytest.mark.parametrize(
    ("service", "group"),
    [
        # gunicorn chowns its socket (0660) to the process's group: the unit's Group=.
        ("ddmail-web.service", "root"),  # ddmail-web; www-data is its one other member
        ("ddmail-backend.service", "ddmail"),  # every ddmail-* account
        ("ddmail-keyhandler.service", "root"),  # ddmail-keyhandler; ddmail-backend a member
    ],
)
def test_each_socket_server_runs_with_its_clients_group(
    tmp_path: Path, service: str, group: str
) -> None:
    text = (_render(tmp_path) / service).read_text()
    assert f"\nGroup={group}\n" in text


@pytest.mark.parametrize("service", SERVICES)
def test_no_unit_changes_its_runtime_directory_before_starting(
    tmp_path: Path, service: str
) -> None:
    """systemd gives a RuntimeDirectory back to User/Group before every command, so a chgrp in
    ExecStartPre does not last (the VM showed nginx refused at the panel's socket)."""
    text = (_render(tmp_path) / service).read_text()
    assert not re.search(r"^ExecStartPre=\+?/bin/ch(grp|mod|own) ", text, flags=re.MULTILINE)


def test_the_backend_asks_for_a_postfix_reload_through_the_flag_root_watches(
    tmp_path: Path,
) -> None:
    """The backend is unprivileged: after a domain change it touches the flag, and the path
    unit (root) reloads Postfix; a domain Postfix has not reloaded for would get 554."""
    units = _render(tmp_path)
    path_unit = (units / "ddmail-postfix-reload.path").read_text()
    flag = re.search(r"^PathChanged=(.+)$", path_unit, flags=re.MULTILINE)
    assert flag and flag.group(1) == "/run/ddmail-backend/postfix-reload"
    assert (
        "ExecStart=/usr/sbin/postfix reload"
        in (units / "ddmail-postfix-reload.service").read_text()
    )
    config = (ROLE / "templates" / "ddmail.toml.j2").read_text()
    assert (
        "postfix_reload = {{ ['/usr/bin/touch', ddmail_postfix_reload_flag] | to_json }}" in config
    )

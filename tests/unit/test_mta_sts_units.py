"""Role certificates' MTA-STS units (DN 40): the root-run certificate job is hardened like the
DDMail units (`systemd-analyze security --offline` at most 3.9) and runs the operator command
with the role's own paths; its program checks the name before anything else."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import yaml

from tests.systemd_security import MAX_EXPOSURE, exposure

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "certificates"
ENV = jinja2.Environment(  # noqa: S701 - a unit file and a shell script, not HTML
    loader=jinja2.FileSystemLoader(ROLE / "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)
# Ansible's quote filter (shlex.quote).
ENV.filters["quote"] = shlex.quote


def _variables(**overrides: Any) -> dict[str, Any]:
    """The role's defaults, with the inventory's values the templates use."""
    values: dict[str, Any] = {
        "ansible_managed": "Managed by Ansible",
        "ddmail_mail_hostname": "mail.example.org",
        "ddmail_panel_hostname": "panel.example.org",
        "ddmail_global_domain": "example.org",
        "ddmail_acme_email": "ops@example.org",
        "ddmail_tls_mode": "acme",
        **overrides,
    }
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    for name, value in defaults.items():
        values.setdefault(
            name, ENV.from_string(value).render(values) if isinstance(value, str) else value
        )
    return values


def _render(template: str, target: Path, **overrides: Any) -> Path:
    target.write_text(ENV.get_template(template).render(_variables(**overrides)))
    return target


def test_the_certificate_job_is_rated_ok_or_better(tmp_path: Path) -> None:
    unit = _render(
        "ddmail-mta-sts-certificates.service.j2", tmp_path / "ddmail-mta-sts-certificates.service"
    )
    assert exposure(unit) <= MAX_EXPOSURE
    text = unit.read_text()
    assert (
        "ExecStart=/opt/ddmail/venv/bin/ddmail admin mta-sts certificates --config "
        "/etc/ddmail/ddmail.toml --dir /etc/ssl/ddmail/mta-sts "
        "--issue /usr/local/sbin/ddmail-mta-sts-certificate\n"
    ) in text


def test_the_program_refuses_anything_but_a_policy_host(tmp_path: Path) -> None:
    for mode in ("acme", "selfsigned"):
        script = _render(
            "ddmail-mta-sts-certificate.sh.j2", tmp_path / f"{mode}.sh", ddmail_tls_mode=mode
        )
        assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
        for argv in (
            ["issue", "example.org"],
            ["issue", "mta-sts.a/../../etc"],
            ["issue", "mta-sts.-x.example"],
            ["renew", "mta-sts.example.org"],
            [],
        ):
            done = subprocess.run(["bash", str(script), *argv], capture_output=True, check=False)
            assert done.returncode == 2, (mode, argv, done.stderr)

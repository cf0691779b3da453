"""Roles unbound and mta_sts_resolver as production renders them (the local stack renders the
same templates with its own values, tests/integration/test_outbound_transport_security.py):
Unbound's file passes unbound-checkconf and listens on loopback only without logging queries,
the MTA-STS resolver's unit passes systemd's checks and is hardened like DDMail's own units,
and the host's resolv.conf the role writes keeps the AD bit (trust-ad)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from ddmail_stack.templates import ROLES_DIR, role_defaults, template_env
from tests.systemd_security import MAX_EXPOSURE, exposure

UNIT = "postfix-mta-sts-resolver.service"


def _unbound_conf(tmp_path: Path, anchor: str = "") -> Path:
    variables = role_defaults("unbound")
    if anchor:  # unbound-checkconf wants the file to exist (the role seeds it before)
        variables["unbound_auto_trust_anchor_file"] = anchor
    text = template_env("unbound").get_template("unbound.conf.j2").render(variables)
    path = tmp_path / "unbound.conf"
    path.write_text(text)
    return path


def _unit(tmp_path: Path) -> Path:
    env = template_env("mta_sts_resolver")
    # The two Ansible filters the unit uses.
    env.filters["dirname"] = os.path.dirname
    env.filters["regex_replace"] = lambda value, pattern, repl: re.sub(pattern, repl, value)
    path = tmp_path / UNIT
    path.write_text(env.get_template(f"{UNIT}.j2").render(role_defaults("mta_sts_resolver")))
    return path


def _option(conf: Path, name: str) -> str:
    done = subprocess.run(
        ["unbound-checkconf", "-o", name, str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_unbound_accepts_the_production_file(tmp_path: Path) -> None:
    anchor = tmp_path / "root.key"
    anchor.write_bytes(Path("/usr/share/dns/root.key").read_bytes())  # package dns-root-data
    conf = _unbound_conf(tmp_path, str(anchor))
    done = subprocess.run(
        ["unbound-checkconf", str(conf)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_unbound_serves_loopback_only_and_logs_no_query(tmp_path: Path) -> None:
    conf = _unbound_conf(tmp_path)
    assert sorted(_option(conf, "interface").split()) == ["127.0.0.1", "::1"]
    assert _option(conf, "verbosity") == "0"
    assert _option(conf, "log-queries") == "no"
    assert _option(conf, "log-replies") == "no"
    assert _option(conf, "auto-trust-anchor-file") == "/var/lib/unbound/root.key"
    text = conf.read_text()
    assert "access-control: 0.0.0.0/0 refuse" in text and "access-control: ::0/0 refuse" in text


def test_the_mta_sts_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = _unit(tmp_path)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and UNIT not in done.stderr, done.stderr
    text = unit.read_text()
    assert "\nAppArmorProfile=ddmail-mta-sts-daemon\n" in text
    assert "\nStateDirectory=mta-sts\n" in text
    # Warnings name the destinations whose policy fetch failed: whom the users write to.
    assert "--verbosity error" in text


def test_the_mta_sts_unit_is_rated_ok_or_better(tmp_path: Path) -> None:
    assert exposure(_unit(tmp_path)) <= MAX_EXPOSURE


def test_resolv_conf_names_unbound_with_trust_ad() -> None:
    tasks = yaml.safe_load((ROLES_DIR / "unbound" / "tasks" / "resolv_conf.yml").read_text())
    copy = next(t["ansible.builtin.copy"] for t in tasks if "resolv.conf" in t["name"])
    lines = [ln for ln in copy["content"].splitlines() if not ln.startswith("#")]
    first = role_defaults("unbound")["unbound_interfaces"][0]  # type: ignore[index]
    rendered = [ln.replace("{{ unbound_interfaces | first }}", str(first)) for ln in lines]
    assert rendered == ["nameserver 127.0.0.1", "options edns0 trust-ad"]
    assert copy["follow"] is False  # a resolvconf or systemd-resolved symlink is replaced


@pytest.mark.parametrize("role", ["unbound", "mta_sts_resolver"])
def test_site_runs_the_resolvers_before_postfix(role: str) -> None:
    site = yaml.safe_load((ROLES_DIR.parent / "site.yml").read_text())[0]
    order = [r["role"] for r in site["roles"]]
    assert order.index(role) < order.index("postfix")

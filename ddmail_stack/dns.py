"""The stack's DNS path for outbound mail (with --dns): Unbound validating what the test
suite's name server serves, and the MTA-STS resolver, both from the production templates
(ansible/roles/unbound, ansible/roles/mta_sts_resolver).

Postfix reads its resolver from /etc/resolv.conf, which names no port: Postfix and the MTA-STS
resolver therefore run in a mount namespace of their own where /etc/resolv.conf is the stack's
file, naming Unbound at the stack's loopback address (layout.resolver_address) on port 53.
Trust anchors of signed test zones are files in resolver_dir/anchors/ (add_trust_anchor)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ddmail_stack.layout import DNS_ROUTED_SUFFIX, StackLayout
from ddmail_stack.processes import find_tool, port_open, spawn, wait_for
from ddmail_stack.templates import role_defaults, template_env


def resolv_conf(layout: StackLayout) -> Path:
    return layout.resolver_dir / "resolv.conf"


def anchors_dir(layout: StackLayout) -> Path:
    return layout.resolver_dir / "anchors"


def unbound_vars(layout: StackLayout) -> dict[str, object]:
    host, _, port = layout.dns_server.rpartition(":")
    return {
        **role_defaults("unbound"),
        "unbound_config_file": str(layout.resolver_dir / "unbound.conf"),
        "unbound_interfaces": [layout.resolver_address],
        "unbound_port": 53,
        "unbound_do_ip6": False,
        "unbound_username": "",
        "unbound_directory": str(layout.resolver_dir),
        "unbound_pidfile": str(layout.run / "unbound.pid"),
        # Offline: no root anchor; every name comes from the test suite's server, and only
        # the zones whose anchor a test installs validate (the rest are insecure, as unsigned
        # domains on the Internet are).
        "unbound_auto_trust_anchor_file": "",
        "unbound_includes": [str(anchors_dir(layout) / "*.conf")],
        "unbound_forward_zones": [{"name": ".", "addrs": [f"{host}@{port}"]}],
        "unbound_nodefault_zones": ["test."],
        "unbound_do_not_query_localhost": False,
        # Tests publish and change zones within seconds.
        "unbound_cache_max_ttl": 5,
        "unbound_cache_max_negative_ttl": 5,
        "unbound_use_syslog": False,
        "unbound_control_interface": str(layout.run / "unbound.ctl"),
    }


def mta_sts_vars(layout: StackLayout) -> dict[str, object]:
    return {
        **role_defaults("mta_sts_resolver"),
        "mta_sts_resolver_config_file": str(layout.resolver_dir / "mta-sts-daemon.yml"),
        "mta_sts_resolver_port": layout.mta_sts_port,
        "mta_sts_resolver_cache_file": str(layout.resolver_dir / "mta-sts-cache.db"),
        # The stack's destinations change between tests; a restart starts clean.
        "mta_sts_resolver_proactive_fetch": False,
    }


def postfix_routes(layout: StackLayout) -> dict[str, object]:
    """Postfix variables for --dns: domains under DNS_ROUTED_SUFFIX by their MX records with
    DANE and MTA-STS; everything else still goes to the relayhost (the sink)."""
    if not layout.dns_server:
        return {
            "postfix_smtp_tls_security_level": "may",
            "postfix_smtp_dns_support_level": "disabled",
            "postfix_smtp_tls_policy_maps": [],
            "postfix_transport_maps": [],
        }
    routes = layout.postfix_dir / "dns-routed.regexp"
    suffix = DNS_ROUTED_SUFFIX.replace(".", r"\.")
    routes.parent.mkdir(parents=True, exist_ok=True)
    # "smtp:" with no nexthop resets it to the recipient's domain (transport(5)): Postfix
    # looks up its MX instead of using the relayhost.
    routes.write_text(f"/\\.{suffix}$/ smtp:\n")
    return {
        "postfix_smtp_tls_security_level": "dane",
        "postfix_smtp_dns_support_level": "dnssec",
        "postfix_smtp_tls_policy_maps": [f"socketmap:inet:127.0.0.1:{layout.mta_sts_port}:postfix"],
        "postfix_transport_maps": [f"regexp:{routes}"],
    }


def render_resolver_config(layout: StackLayout) -> None:
    layout.resolver_dir.mkdir(parents=True, exist_ok=True)
    anchors_dir(layout).mkdir(exist_ok=True)
    for role, template, variables in (
        ("unbound", "unbound.conf.j2", unbound_vars(layout)),
        ("mta_sts_resolver", "mta-sts-daemon.yml.j2", mta_sts_vars(layout)),
    ):
        key = "unbound_config_file" if role == "unbound" else "mta_sts_resolver_config_file"
        text = template_env(role).get_template(template).render(variables)
        Path(str(variables[key])).write_text(text)
    # edns0 and trust-ad: without them glibc drops the AD bit Postfix's DANE needs.
    resolv_conf(layout).write_text(
        f"nameserver {layout.resolver_address}\noptions edns0 trust-ad\n"
    )
    subprocess.run(
        [find_tool("unbound-checkconf"), str(layout.resolver_dir / "unbound.conf")],
        check=True,
        capture_output=True,
    )


def with_resolver(layout: StackLayout, argv: Sequence[str]) -> list[str]:
    """ARGV run in a private mount namespace whose /etc/resolv.conf names the stack's Unbound
    (--dns); unchanged without --dns."""
    if not layout.dns_server:
        return list(argv)
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    return [
        find_tool("unshare"),
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
        str(resolv_conf(layout)),
        *argv,
    ]


def start_resolver(layout: StackLayout) -> dict[str, subprocess.Popen[bytes]]:
    """Unbound, then the MTA-STS resolver (which asks it); {} without --dns."""
    if not layout.dns_server:
        return {}
    render_resolver_config(layout)
    unbound = spawn(
        [find_tool("unbound"), "-d", "-c", str(layout.resolver_dir / "unbound.conf")],
        layout.log_dir / "unbound.log",
    )
    wait_for("unbound", lambda: port_open(53, layout.resolver_address))
    # Its HTTPS fetches trust the stack's CA (the stand-in for the public CAs), and go to
    # the policy hosts directly, never through a proxy the environment may name.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SSL_CERT_FILE": str(layout.ca_cert)}
    sts = spawn(
        with_resolver(
            layout,
            [
                find_tool("mta-sts-daemon"),
                "-c",
                str(layout.resolver_dir / "mta-sts-daemon.yml"),
                "-v",
                "warn",
            ],
        ),
        layout.log_dir / "mta-sts-daemon.log",
        env=env,
    )
    wait_for("mta-sts-daemon", lambda: port_open(layout.mta_sts_port))
    return {"unbound": unbound, "mta-sts-daemon": sts}


def add_trust_anchor(layout: StackLayout, zone: str, ds: str) -> None:
    """Trust ZONE's key with DS (as a registrar's parent zone would), and make Unbound
    reload its configuration."""
    name = zone.rstrip(".").lower()
    (anchors_dir(layout) / f"{name}.conf").write_text(f'trust-anchor: "{name}. DS {ds}"\n')
    _reload_unbound(layout)


def remove_trust_anchor(layout: StackLayout, zone: str) -> None:
    (anchors_dir(layout) / f"{zone.rstrip('.').lower()}.conf").unlink(missing_ok=True)
    _reload_unbound(layout)


def _reload_unbound(layout: StackLayout) -> None:
    os.kill(int((layout.run / "unbound.pid").read_text()), signal.SIGHUP)

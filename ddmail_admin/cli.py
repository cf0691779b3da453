"""`ddmail`: the operator's commands (`ddmail admin ...`, this package) and the local stack
(`ddmail stack ...`, the development package ddmail_stack, imported only for that area)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ddmail_admin import (
    backup_cli,
    dbadmin,
    dnssec,
    dnszone,
    mta_sts,
    panel,
    tls_cli,
    tlsreports_cli,
)
from ddmail_admin import target as admin_target
from ddmail_common.config import ConfigError
from ddmail_common.errors import ApiError
from ddmail_common.utc import utc_text
from ddmail_web.funds import FundsError


def cmd_domain(args: argparse.Namespace) -> int:
    client = admin_target.admin_client(admin_target.config(args))
    if args.action == "list":
        for d in client.call("GET", "/v1/domains/global")["domains"]:
            print(f"{d['name']}\t{'enabled' if d['enabled'] else 'disabled'}")
        return 0
    if not args.name:
        print("a domain name is required", file=sys.stderr)
        return 2
    if args.action == "add":
        made = client.call("POST", "/v1/domains/global", {"name": args.name})
    else:
        made = client.call(
            "POST",
            "/v1/domains/global/enabled",
            {"name": args.name, "enabled": args.action == "enable"},
        )
    print(f"{made['name']}\t{'enabled' if made['enabled'] else 'disabled'}")
    return 0


def cmd_dns(args: argparse.Namespace) -> int:
    cfg = admin_target.config(args)
    client = admin_target.admin_client(cfg)
    names = [d["name"] for d in client.call("GET", "/v1/domains/global")["domains"]]
    keys = client.call("GET", "/v1/dkim")["keys"]
    if args.domain:
        # One zone: that domain's records and every DKIM key published under it.
        if args.domain.lower().rstrip(".") not in names:
            print(f"{args.domain} is not a global domain", file=sys.stderr)
            return 2
        names = [args.domain.lower().rstrip(".")]
        keys = [k for k in keys if dnssec.in_zone(k["record"], names[0])]
    if args.write:
        if not args.sign:
            print("--write writes signed zones: add --sign", file=sys.stderr)
            return 2
        for path in dnssec.write_signed(cfg, names, keys):
            print(f"wrote {path}")
        return 0
    render = dnssec.render_signed if args.sign else dnszone.render
    sys.stdout.write(render(cfg, names, keys))
    return 0


def _dkim_line(key: dict[str, Any]) -> str:
    if key["state"] == "active":
        detail = f"signing since {utc_text(key['active_at'])}"
    elif key["state"] == "published":
        detail = f"signs from {utc_text(key['switch_after'])} once DNS serves it"
    else:
        detail = f"published until {utc_text(key['retire_at'])}"
    return f"{key['domain']}\t{key['selector']}\t{key['state']}\t{key['record']}\t{detail}"


def cmd_dkim(args: argparse.Namespace) -> int:
    client = admin_target.admin_client(admin_target.config(args))
    if args.action == "list":
        for key in client.call("GET", "/v1/dkim")["keys"]:
            print(_dkim_line(key))
        return 0
    started = client.call("POST", "/v1/dkim/rotate", {"domain": args.domain} if args.domain else {})
    for key in started["started"]:
        print(_dkim_line(key))
    if started["started"]:
        print(
            "Publish the new TXT records (`ddmail admin dns zone`); the switch follows by itself."
        )
    else:
        print("No rotation started: every domain has one under way or in its grace period.")
    return 0


def cmd_rotate_master(args: argparse.Namespace) -> int:
    from ddmail_web.keyrotation import rotate_master

    cfg = admin_target.config(args)
    # The key file is replaced as root (its directory is root's); the secrets are re-wrapped
    # as the operator account, which peer authentication lets into the panel's tables.
    new_id, count = rotate_master(
        cfg, db_identity=lambda: dbadmin.become(dbadmin.ADMIN_ACCOUNT, cfg.db_url)
    )
    print(
        f"new master key {new_id}; {count} secrets re-wrapped. Remove the old key's line from "
        "the key file once every panel process has restarted."
    )
    return 0


def add_admin_commands(top: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    admin = top.add_parser("admin", help="operator commands").add_subparsers(
        dest="cmd", required=True
    )
    domain = admin.add_parser("domain", help="global domains")
    domain.add_argument("action", choices=["add", "list", "disable", "enable"])
    domain.add_argument("name", nargs="?")
    admin_target.add_arguments(domain)
    domain.set_defaults(func=cmd_domain)
    dns = admin.add_parser("dns", help="the DNS records to publish, in zone-file syntax")
    dns.add_argument("action", choices=["zone"])
    dns.add_argument(
        "--domain", help="only this global domain's zone (one file per zone for a name server)"
    )
    dns.add_argument(
        "--sign",
        action="store_true",
        help="print each global domain as a DNSSEC-signed zone ([zone] nameservers), with its DS",
    )
    dns.add_argument(
        "--write",
        action="store_true",
        help="with --sign: write each zone to [zone] signed_dir/<domain>.zone instead",
    )
    admin_target.add_arguments(dns)
    dns.set_defaults(func=cmd_dns)
    dkim = admin.add_parser("dkim", help="DKIM signing keys: list them, start a rotation")
    dkim.add_argument("action", choices=["list", "rotate"])
    dkim.add_argument("domain", nargs="?", help="rotate: only this domain (default: every one)")
    admin_target.add_arguments(dkim)
    dkim.set_defaults(func=cmd_dkim)
    keys = admin.add_parser("keys", help="the panel's master key")
    keys.add_argument("action", choices=["rotate-master"])
    admin_target.add_arguments(keys)
    keys.set_defaults(func=cmd_rotate_master)
    panel.add_commands(admin)
    dbadmin.add_commands(admin)
    backup_cli.add_commands(admin)
    tlsreports_cli.add_commands(admin)
    mta_sts.add_commands(admin)
    tls_cli.add_commands(admin)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ddmail")
    top = p.add_subparsers(dest="area", required=True)
    # Listed for --help only: main() hands `ddmail stack ...` to ddmail_stack before parsing.
    top.add_parser("stack", help="the local stack (development and trials)", add_help=False)
    add_admin_commands(top)
    return p


def run_admin(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except ApiError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except (FundsError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, FundsError) else 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["stack"]:
        # The local stack is development code: only this area loads it.
        from ddmail_stack.cli import main as stack_main

        return stack_main(argv)
    return run_admin(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

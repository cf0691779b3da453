"""`ddmail admin tls rollover prepare|switch|finish|status` (ddmail_admin.tlsrollover)."""

from __future__ import annotations

import argparse
import sys

from ddmail_admin import target as admin_target
from ddmail_admin import tlsrollover


def cmd_rollover(args: argparse.Namespace) -> int:
    cfg = admin_target.config(args)
    try:
        if args.step == "prepare":
            records = tlsrollover.prepare(cfg)
            print("next key prepared; publish its TLSA records (`ddmail admin dns zone`):")
            print("\n".join(record.line() for record in records))
            print(tlsrollover.status(cfg))
        elif args.step == "switch":
            tlsrollover.switch(cfg, check_dns=not args.no_dns_check)
            print(
                "switched: every TLS port serves the next key; its predecessor's TLSA records "
                "stay published until: ddmail admin tls rollover finish"
            )
        elif args.step == "finish":
            gone = tlsrollover.finish(cfg)
            print("finished; these TLSA records may leave DNS (`dns zone` no longer prints them):")
            print("\n".join(record.line() for record in gone))
        else:
            print(tlsrollover.status(cfg))
    except tlsrollover.RolloverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def add_commands(admin: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    tls = admin.add_parser("tls", help="the TLS key every port serves").add_subparsers(
        dest="tls_cmd", required=True
    )
    rollover = tls.add_parser("rollover", help="replace the key without breaking DANE")
    rollover.add_argument("step", choices=["prepare", "switch", "finish", "status"])
    rollover.add_argument(
        "--no-dns-check",
        action="store_true",
        help="switch at once, without waiting for DNS or the TTL (only for zones without "
        "DNSSEC, where no sender uses DANE)",
    )
    admin_target.add_arguments(rollover)
    rollover.set_defaults(func=cmd_rollover)

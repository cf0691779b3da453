"""Operator commands on the panel's data: funds, vouchers, accounts, audit, billing."""

from __future__ import annotations

import argparse

from ddmail_admin import target as admin_target
from ddmail_admin.dbadmin import ADMIN_ACCOUNT, become
from ddmail_common.client import ServiceClient
from ddmail_common.config import Config
from ddmail_common.db import Database
from ddmail_web import audit, funds, periodic
from ddmail_web.models import Account
from ddmail_web.state import panel_database


def _setup(args: argparse.Namespace) -> tuple[Config, Database, ServiceClient]:
    cfg = admin_target.config(args)
    become(ADMIN_ACCOUNT, cfg.db_url)
    return cfg, panel_database(cfg), admin_target.admin_client(cfg)


def _billing(args: argparse.Namespace) -> funds.Billing:
    cfg, db, client = _setup(args)
    return funds.Billing(db, client, cfg.web)


def credit(args: argparse.Namespace) -> int:
    account = _billing(args).credit(args.reference, funds.parse_amount(args.amount))
    print(f"credited {args.amount} to account {account}")
    return 0


def vouchers(args: argparse.Namespace) -> int:
    _, db, _ = _setup(args)
    with db.session() as s:
        codes = funds.create_vouchers(s, args.count, funds.parse_amount(args.amount))
    print("\n".join(codes))
    return 0


def account(args: argparse.Namespace) -> int:
    billing = _billing(args)
    if args.action == "gratis":
        with billing.db.session() as s:
            row = s.get(Account, args.account)
            if row is None:
                raise funds.FundsError("No such account.")
            row.gratis = True
            audit.append(s, row.id, "admin", "account_gratis")
    else:
        billing.set_enabled(args.account, args.action == "enable", "admin")
    print(f"account {args.account}: {args.action}")
    return 0


def verify_audit(args: argparse.Namespace) -> int:
    _, db, _ = _setup(args)
    with db.session() as s:
        broken = audit.verify(s, args.account)
    if broken is None:
        print(f"audit trail of {args.account}: intact")
        return 0
    print(f"audit trail of {args.account}: first broken link at entry {broken}")
    return 1


def billing_run(args: argparse.Namespace) -> int:
    cfg, db, client = _setup(args)
    counts = periodic.run(db, client, cfg.web)
    print(
        f"charged {counts['charged']} accounts, deleted {counts['deleted']}, "
        f"{counts['openpgp_held']} new held-back deliveries recorded, "
        f"{counts['expired']} expired sessions, counters and key files removed"
    )
    return 0


def add_commands(admin: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    f = admin.add_parser("funds", help="credit a payment by its reference")
    f.add_argument("action", choices=["credit"])
    f.add_argument("reference")
    f.add_argument("amount")
    f.set_defaults(func=credit)
    v = admin.add_parser("vouchers", help="create prepaid voucher codes")
    v.add_argument("action", choices=["create"])
    v.add_argument("count", type=int)
    v.add_argument("amount")
    v.set_defaults(func=vouchers)
    a = admin.add_parser("account", help="enable, disable or make an account gratis")
    a.add_argument("action", choices=["enable", "disable", "gratis"])
    a.add_argument("account")
    a.set_defaults(func=account)
    au = admin.add_parser("audit", help="verify an account's hash-chained audit trail")
    au.add_argument("action", choices=["verify"])
    au.add_argument("account")
    au.set_defaults(func=verify_audit)
    b = admin.add_parser("billing", help="run the monthly charge and clean-up job now")
    b.add_argument("action", choices=["run"])
    b.set_defaults(func=billing_run)
    for parser in (f, v, a, au, b):
        admin_target.add_arguments(parser)

"""`ddmail stack ...`: run the local stack (the `ddmail` console script, ddmail_admin.cli,
hands this area here; `ddmail admin ...` is ddmail_admin's)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from ddmail_admin import target as admin_target
from ddmail_common.db import URL_CREDENTIAL_REFUSED, has_inline_password
from ddmail_common.errors import ApiError
from ddmail_stack import mta, tls
from ddmail_stack.layout import DEFAULT_PORT_BASE, GLOBAL_DOMAIN, StackLayout
from ddmail_stack.panel import reload_nginx
from ddmail_stack.processes import python_script
from ddmail_stack.secrets import ensure_secret
from ddmail_stack.stack import (
    SERVER_NAMES,
    Stack,
    StackError,
    admin_client,
    run_until_signalled,
)

LOCAL_ACCOUNT = "local"
# The host name mail clients should use for the local stack (its certificate names it).
LOCAL_HOST = "localhost"


def cmd_stack_up(args: argparse.Namespace) -> int:
    if args.db and has_inline_password(args.db):
        print(f"error: --db {URL_CREDENTIAL_REFUSED}", file=sys.stderr)
        return 2
    layout = StackLayout(
        root=args.root,
        port_base=args.port_base,
        db_url=args.db or "",
        dns_server=args.dns or "",
        mailbox_quota_mb=args.mailbox_quota_mb,
    )
    stack = Stack(layout)
    try:
        stack.up()
    except BaseException:
        stack.down()
        raise
    # Mail clients get "localhost": the certificate names it, and several clients (mbsync,
    # s-nail, fetchmail) do not match an IP address against the certificate's IP SANs.
    print(f"DDMail local stack is up in {layout.root}")
    print(f"  panel       {layout.web_url}  (CA: {layout.ca_cert})")
    print(f"  IMAPS       {LOCAL_HOST}:{layout.imaps_port}")
    print(
        f"  submission  {LOCAL_HOST}:{layout.submission_port} (STARTTLS), "
        f"{LOCAL_HOST}:{layout.smtps_port} (TLS)"
    )
    print(
        f"  MX          {LOCAL_HOST}:{layout.smtp_port}; outbound mail lands in {layout.sink_dir}"
    )
    onion, i2p = stack.addresses
    print(f"  Tor, I2P    {onion}, {i2p} (offline); what they forward to, without TLS:")
    print(
        f"              panel http://{LOCAL_HOST}:{layout.anon_http_port}, "
        f"IMAP {LOCAL_HOST}:{layout.anon_imap_port}, "
        f"submission {LOCAL_HOST}:{layout.anon_submission_port}"
    )
    # The full path: the virtualenv's bin directory is usually not on PATH.
    print(f"  try: {add_mailbox_command(layout)}")
    print("Press Ctrl-C to stop.", flush=True)
    run_until_signalled(stack)
    return 0


def add_mailbox_command(layout: StackLayout, address: str = f"you@{GLOBAL_DOMAIN}") -> str:
    """The command that creates a mailbox in this stack, runnable as printed."""
    return shlex.join(
        [python_script("ddmail"), "stack", "add-mailbox", "--root", str(layout.root), address]
    )


def cmd_stack_down(args: argparse.Namespace) -> int:
    pid_file = args.root / "run" / "stack.pid"
    if not pid_file.exists():
        print(f"no stack is running in {args.root}", file=sys.stderr)
        return 1
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return 0
    deadline = time.monotonic() + 60
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return 0 if not pid_file.exists() else 1


def cmd_issue_certificate(args: argparse.Namespace) -> int:
    """[tls] issue_command of the stack: the next key and certificate of a key rollover, from
    the stack's CA, at the paths `ddmail admin tls rollover prepare` names."""
    layout = StackLayout.load(args.root)
    tls.issue(
        layout.ca_cert,
        layout.ca_key,
        Path(os.environ["DDMAIL_TLS_NEXT_CERTIFICATE"]),
        Path(os.environ["DDMAIL_TLS_NEXT_KEY"]),
        SERVER_NAMES,
    )
    return 0


def cmd_reload_tls(args: argparse.Namespace) -> int:
    """[tls] reload_command of the stack: every TLS daemon loads the certificate again."""
    layout = StackLayout.load(args.root)
    mta.postfix_reload(layout)
    mta.dovecot_reload(layout)
    reload_nginx(layout)
    return 0


def cmd_add_mailbox(args: argparse.Namespace) -> int:
    layout = StackLayout.load(args.root)
    client = admin_client(layout)
    # Mailboxes made by hand belong to one local account whose recovery secret stays on disk.
    secret = ensure_secret(layout.secrets / "local-account.recovery").decode()
    try:
        client.call(
            "POST", "/v1/accounts/recovery-key", {"account": LOCAL_ACCOUNT, "secret": secret}
        )
    except ApiError as exc:
        if exc.status != 409:
            raise
    made = client.call("POST", "/v1/mailboxes", {"account": LOCAL_ACCOUNT, "address": args.address})
    print(f"mailbox {made['address']} created; its password (shown once):")
    print(made["password"])
    return 0


def quota_mb(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of MiB, 0 for none: {text!r}")
    return value


def dns_server(text: str) -> str:
    host, sep, port = text.rpartition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected IP:PORT, got {text!r}") from None
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected IP:PORT, got {text!r}")
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ddmail")
    top = p.add_subparsers(dest="area", required=True)

    stack = top.add_parser("stack", help="the local stack").add_subparsers(
        dest="cmd", required=True
    )
    up = stack.add_parser("up", help="start everything and run until interrupted")
    up.add_argument("--root", type=admin_target.absolute, required=True)
    up.add_argument("--port-base", type=int, default=DEFAULT_PORT_BASE)
    up.add_argument("--db", default=None, help="database URL (default: SQLite under --root)")
    up.add_argument(
        "--dns",
        type=dns_server,
        default=None,
        help="HOST:PORT of the DNS server to resolve through, e.g. a local authoritative server "
        "serving test zones (default: the machine's resolver)",
    )
    up.add_argument(
        "--mailbox-quota-mb",
        type=quota_mb,
        default=0,
        help="each mailbox's quota in MiB of stored mail, as Dovecot enforces it and the "
        "mailboxes page states it (default: 0, none)",
    )
    up.set_defaults(func=cmd_stack_up)
    down = stack.add_parser("down", help="stop a running stack")
    down.add_argument("--root", type=admin_target.absolute, required=True)
    down.set_defaults(func=cmd_stack_down)
    add = stack.add_parser("add-mailbox", help="create a mailbox and print its password")
    add.add_argument("--root", type=admin_target.absolute, required=True)
    add.add_argument("address")
    add.set_defaults(func=cmd_add_mailbox)
    issue = stack.add_parser(
        "issue-certificate", help="(tls.issue_command) the next key and certificate"
    )
    issue.add_argument("--root", type=admin_target.absolute, required=True)
    issue.set_defaults(func=cmd_issue_certificate)
    reload = stack.add_parser("reload-tls", help="(tls.reload_command) load the certificate")
    reload.add_argument("--root", type=admin_target.absolute, required=True)
    reload.set_defaults(func=cmd_reload_tls)

    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ApiError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

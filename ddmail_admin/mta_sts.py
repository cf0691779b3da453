"""`ddmail admin mta-sts hosts|certificates`: the MTA-STS policy hosts (`mta-sts.<domain>` of
every enabled global domain and every verified customer domain) and a certificate for each.

Senders fetch a domain's policy from https://mta-sts.<domain>/ and check its certificate
(RFC 8461 section 3.3), so each customer's policy host needs one of its own. `certificates`
runs as root (production: ddmail-mta-sts-certificates.timer), never the panel or the backend:
it asks the backend for the hosts, and has a separate program (--issue, role certificates:
certbot in acme mode, the host's CA in selfsigned mode) obtain `DIR/<host>.pem` and
`DIR/<host>.key` for each host that has none, and remove those of hosts no longer served. nginx
picks the file by the name the client asked for (SNI), so nothing needs a reload (DN 40)."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from cryptography import x509

from ddmail_admin import target as admin_target
from ddmail_common.config import Config

# A failed request is not retried sooner: ACME CAs limit failed validations per host name
# (Let's Encrypt: 5 an hour), and a customer who has not pointed the name at us yet fails each time.
RETRY_AFTER_SECONDS = 6 * 3600
ISSUE_TIMEOUT_SECONDS = 300
# The program's "could not try now" (certbot's lock held by another run: the renewal timer, a
# key rollover): nothing was asked of the CA, so the host is tried on the next run, not backed off.
BUSY = os.EX_TEMPFAIL
# What the backend sends is a checked domain name already; a name becomes a file name and an
# argument of a root program here, so it is checked again.
HOST = re.compile(r"mta-sts(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+")


def hosts(cfg: Config) -> list[str]:
    answer = admin_target.admin_client(cfg).call("GET", "/v1/mta-sts/hosts")
    return [h for h in answer["hosts"] if HOST.fullmatch(h)]


def covered(certificate: Path | None) -> set[str]:
    """The names the main certificate ([tls] certificate) holds: nginx serves those hosts with
    it (the panel's server block), so they need no certificate of their own."""
    if certificate is None or not certificate.exists():
        return set()
    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {name.lower() for name in sans.get_values_for_type(x509.DNSName)}


def sync(
    wanted: Iterable[str],
    directory: Path,
    run: Callable[[str, str], int],
    now: float,
    retry_after: float = RETRY_AFTER_SECONDS,
) -> tuple[list[str], list[str], list[str]]:
    """Issue what is missing, remove what is no longer wanted: (what was done, what failed,
    what could not be tried now). RUN(action, host) runs the issuing program: its exit status."""
    done: list[str] = []
    failed: list[str] = []
    busy: list[str] = []
    wanted = sorted(set(wanted))
    for host in wanted:
        marker = directory / f".{host}.failed"
        if (directory / f"{host}.pem").exists():
            continue
        if marker.exists() and marker.stat().st_mtime > now - retry_after:
            continue
        status = run("issue", host)
        if status == 0 and (directory / f"{host}.pem").exists():
            marker.unlink(missing_ok=True)
            done.append(f"issued {host}")
        elif status == BUSY:
            busy.append(host)
        else:
            marker.touch()
            failed.append(host)
    for present in sorted(directory.glob("mta-sts.*.pem")):
        host = present.name.removesuffix(".pem")
        if host not in wanted:
            status = run("remove", host)
            if status == 0:
                done.append(f"removed {host}")
            elif status == BUSY:
                busy.append(host)
            else:
                failed.append(host)
    for marker in directory.glob(".mta-sts.*.failed"):
        if marker.name[1:].removesuffix(".failed") not in wanted:
            marker.unlink()
    return done, failed, busy


def program(argv: Sequence[str]) -> Callable[[str, str], int]:
    def run(action: str, host: str) -> int:
        try:
            result = subprocess.run(
                [*argv, action, host], timeout=ISSUE_TIMEOUT_SECONDS, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"{action} {host}: {exc}", file=sys.stderr)
            return 1
        return result.returncode

    return run


def cmd_hosts(args: argparse.Namespace) -> int:
    for host in hosts(admin_target.config(args)):
        print(host)
    return 0


def cmd_certificates(args: argparse.Namespace) -> int:
    cfg = admin_target.config(args)
    wanted = set(hosts(cfg)) - covered(cfg.tls.certificate)
    args.dir.mkdir(parents=True, exist_ok=True)
    done, failed, busy = sync(wanted, args.dir, program(shlex.split(args.issue)), time.time())
    for line in done:
        print(line)
    # A name its owner has not pointed at us yet is the customer's to fix, not a failure of
    # this job: the unit stays green (systemctl --failed lists real faults) and says which.
    for host in failed:
        print(f"no certificate for {host} (tried again in {RETRY_AFTER_SECONDS}s)", file=sys.stderr)
    for host in busy:
        print(f"{host} not tried: certbot is busy (tried again on the next run)", file=sys.stderr)
    return 0


def add_commands(admin: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sts = admin.add_parser("mta-sts", help="MTA-STS policy hosts and their certificates")
    actions = sts.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("hosts", help="every mta-sts.<domain> the panel serves")
    admin_target.add_arguments(listing)
    listing.set_defaults(func=cmd_hosts)
    certs = actions.add_parser(
        "certificates", help="a certificate for each policy host (run as root, by a timer)"
    )
    certs.add_argument(
        "--dir", type=admin_target.absolute, required=True,
        help="where nginx finds <host>.pem and <host>.key",
    )  # fmt: skip
    certs.add_argument(
        "--issue", required=True,
        help="the program that obtains (ARGS issue HOST) or removes (ARGS remove HOST) one",
    )  # fmt: skip
    admin_target.add_arguments(certs)
    certs.set_defaults(func=cmd_certificates)

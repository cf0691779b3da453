"""The local stack's stand-in for the deployment's MTA-STS certificate program (role
certificates, `ddmail-mta-sts-certificate`, which runs certbot or signs with the host's CA):

    python -m ddmail_stack.mta_sts ROOT issue|remove HOST

signs a certificate for one policy host (`mta-sts.<domain>`) with the stack's CA, or removes
it, in the directory where the stack's nginx picks it by SNI. `ddmail admin mta-sts
certificates --root ROOT --dir DIR --issue '... ROOT'` runs it as the deployment's timer runs
the real one."""

from __future__ import annotations

import sys
from pathlib import Path

from ddmail_stack.layout import StackLayout
from ddmail_stack.panel import mta_sts_certificates
from ddmail_stack.tls import issue


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("issue", "remove"):
        print("usage: python -m ddmail_stack.mta_sts ROOT issue|remove HOST", file=sys.stderr)
        return 2
    root, action, host = argv
    layout = StackLayout(root=Path(root))
    directory = mta_sts_certificates(layout)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{host}.pem", directory / f"{host}.key"
    cert.unlink(missing_ok=True)
    key.unlink(missing_ok=True)
    if action == "issue":
        # A host name only: senders connect by name, never by address.
        issue(layout.ca_cert, layout.ca_key, cert, key, [host], addresses=())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

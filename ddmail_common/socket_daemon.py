"""Start-up shared by the daemons Postfix talks to over a unix socket: the submission milter
(``ddmail-milter``) and the OpenPGP delivery stage (``ddmail-pgpstage``)."""

from __future__ import annotations

import argparse
import grp
import logging
import os
from pathlib import Path

from ddmail_common import config as config_mod
from ddmail_common.logredact import install as install_redaction


def start(description: str, name: str) -> config_mod.Config:
    """Console-script entry `ddmail-NAME --config FILE`: redacted warnings-only logging that
    names the daemon, then its config."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args()
    install_redaction()
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {name}: %(message)s")
    return config_mod.load_service(args.config)


def restrict_to_postfix(socket_path: Path) -> None:
    """Only Postfix (group postfix) may connect. The owner stays whoever made the socket: the
    daemons run unprivileged (no CAP_CHOWN). A group change is only needed where the socket's
    directory is not already setgid postfix, and the daemon is then in group postfix."""
    postfix_gid = grp.getgrnam("postfix").gr_gid
    if socket_path.stat().st_gid != postfix_gid:
        os.chown(socket_path, -1, postfix_gid)
    socket_path.chmod(0o660)

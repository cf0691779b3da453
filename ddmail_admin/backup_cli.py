"""`ddmail admin backup create|list|restore` (DN 33; docs/operations.md "Backups and restore")."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from ddmail_admin import backup
from ddmail_admin import target as admin_target
from ddmail_common.config import BackupSettings, Config


def settings(cfg: Config, args: argparse.Namespace) -> BackupSettings:
    """[backup] from the config, with what the command line overrides."""
    s = cfg.backup
    if args.dir is not None:
        s = dataclasses.replace(s, dir=args.dir)
    if getattr(args, "public_key", None) is not None:
        s = dataclasses.replace(s, public_key=args.public_key)
    if getattr(args, "keep", None) is not None:
        if args.keep < 1:
            raise backup.BackupError("--keep: at least 1")
        s = dataclasses.replace(s, keep=args.keep)
    return s


def cmd_create(args: argparse.Namespace) -> int:
    cfg = admin_target.config(args)
    made = backup.create(cfg, settings(cfg, args), tuple(args.path))
    print(made)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    cfg = admin_target.config(args)
    for line in backup.describe(backup.backups(settings(cfg, args).dir)):
        print(line)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    cfg = admin_target.config(args)
    archive = args.archive
    if archive.parent == Path(".") and not archive.exists():
        archive = settings(cfg, args).dir / archive.name  # a name from `backup list`
    done = backup.restore(
        cfg, archive, args.homedir, passphrase_on_stdin=args.passphrase_stdin, force=args.force
    )
    print(f"restored {archive.name} (made {done.manifest['created']}); run `ddmail admin db "
          "migrate` next, then start the services")  # fmt: skip
    for path in done.kept_aside:
        print(f"previous state kept at {path}: delete it once the restored host works")
    return 0


def run(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except backup.BackupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return wrapped


def add_commands(admin: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    b = admin.add_parser("backup", help="encrypted backups").add_subparsers(
        dest="action", required=True
    )
    create = b.add_parser("create", help="write an encrypted backup now, keep the newest")
    create.add_argument("--public-key", type=admin_target.absolute, help="[backup] public_key")
    create.add_argument("--keep", type=int, help="[backup] keep")
    create.add_argument(
        "--path", type=admin_target.absolute, action="append", default=[],
        help="one more file or directory to include (repeatable), besides [backup] paths",
    )  # fmt: skip
    create.set_defaults(func=run(cmd_create))
    listing = b.add_parser("list", help="the backups, newest first")
    listing.set_defaults(func=run(cmd_list))
    restore = b.add_parser("restore", help="put a backup back (stop the services first)")
    restore.add_argument("archive", type=Path, help="a backup file, or its name in the dir")
    restore.add_argument("--homedir", type=admin_target.absolute, help="gpg home with the key")
    restore.add_argument(
        "--passphrase-stdin", action="store_true",
        help="read the secret key's passphrase from standard input (else gpg-agent asks)",
    )  # fmt: skip
    restore.add_argument("--force", action="store_true", help="replace a non-empty state")
    restore.set_defaults(func=run(cmd_restore))
    for parser in (create, listing, restore):
        parser.add_argument("--dir", type=admin_target.absolute, help="[backup] dir")
        admin_target.add_arguments(parser)

"""What an operator command acts on: a local stack (`--root DIR`) or an installed server
(`--config FILE`, the deployment's ddmail.toml; what the production timer passes)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ddmail_common.client import ServiceClient
from ddmail_common.config import Config
from ddmail_common.config import load as load_config
from ddmail_stack import config_file
from ddmail_stack.layout import StackLayout


def absolute(text: str) -> Path:
    return Path(text).absolute()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--root", type=absolute, help="a local stack's state root")
    target.add_argument("--config", type=absolute, help="an installed server's ddmail.toml")


def config(args: argparse.Namespace) -> Config:
    if args.config is not None:
        return load_config(args.config)
    return config_file.load(StackLayout.load(args.root))


def admin_client(cfg: Config) -> ServiceClient:
    """The backend, as the operator (caller "admin")."""
    return ServiceClient("admin", cfg.secret("admin"), cfg.backend_socket, "backend")

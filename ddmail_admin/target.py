"""What an operator command acts on: an installed server (`--config FILE`, the deployment's
ddmail.toml; what the production units pass) or a local stack (`--root DIR`: the config its
`stack.json` names). Production code: the local stack's package is never imported."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ddmail_common.client import ServiceClient
from ddmail_common.config import Config, ConfigError
from ddmail_common.config import load as load_config


def absolute(text: str) -> Path:
    return Path(text).absolute()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--root", type=absolute, help="a local stack's state root")
    target.add_argument("--config", type=absolute, help="an installed server's ddmail.toml")


def config_path(args: argparse.Namespace) -> Path:
    if args.config is not None:
        return Path(args.config)
    stack_json = Path(args.root) / "stack.json"
    try:
        return Path(json.loads(stack_json.read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{stack_json}: no local stack's config named there ({exc})") from None


def config(args: argparse.Namespace) -> Config:
    return load_config(config_path(args))


def admin_client(cfg: Config) -> ServiceClient:
    """The backend, as the operator (caller "admin")."""
    return ServiceClient("admin", cfg.secret("admin"), cfg.backend_socket, "backend")

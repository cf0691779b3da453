"""The production Ansible templates as the local stack renders them: the same Jinja2 settings
as Ansible's template module, but undefined variables are errors, and each role's defaults."""

from __future__ import annotations

from pathlib import Path

import jinja2
import yaml

ROLES_DIR = Path(__file__).resolve().parent.parent / "ansible" / "roles"


def template_env(role: str) -> jinja2.Environment:
    """The Jinja2 settings Ansible's template module uses, but with StrictUndefined."""
    return jinja2.Environment(  # noqa: S701 - daemon config files, not HTML
        loader=jinja2.FileSystemLoader(ROLES_DIR / role / "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        keep_trailing_newline=True,
    )


def role_defaults(role: str) -> dict[str, object]:
    data = yaml.safe_load((ROLES_DIR / role / "defaults" / "main.yml").read_text())
    assert isinstance(data, dict)
    return data


def tls_policy() -> dict[str, object]:
    """The one TLS policy (role tls_policy, a dependency of postfix, dovecot and nginx)."""
    return role_defaults("tls_policy")

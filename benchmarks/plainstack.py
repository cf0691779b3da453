"""`python -m benchmarks.plainstack --root R --port-base N`: `ddmail stack up` with mail_crypt off.

The baseline for encrypted delivery. The production templates have no off switch and get none:
this wraps ``ddmail_stack.mta.render_mail_config`` so that, once the stack has rendered its
config, the rendered dovecot.conf in that root loses ``mail_crypt`` from ``mail_plugins``. The
userdb still returns the global public key; without the plugin nothing reads it.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from ddmail_stack import cli, mta
from ddmail_stack.layout import StackLayout

_render = mta.render_mail_config
_PLUGINS = re.compile(r"^(mail_plugins = .*?)\s*\bmail_crypt\b(.*)$", re.MULTILINE)


def render_without_mail_crypt(layout: StackLayout, **kwargs: Any) -> None:
    _render(layout, **kwargs)
    conf = layout.dovecot_dir / "dovecot.conf"
    text, count = _PLUGINS.subn(r"\1\2", conf.read_text())
    if count != 1:
        raise RuntimeError(f"no 'mail_plugins = ... mail_crypt' line in {conf}")
    conf.write_text(text)


def main(argv: list[str]) -> int:
    mta.render_mail_config = render_without_mail_crypt  # Stack.up calls mta.render_mail_config
    return cli.main(["stack", "up", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

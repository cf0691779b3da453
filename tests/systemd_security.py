"""`systemd-analyze security --offline`: a unit's overall exposure level, for the unit tests
(rendered templates) and the deployment tests (units installed in a chroot)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

# The services of role ddmail (ansible/roles/ddmail/templates), each rated below; the first six
# are the long-running ones.
DDMAIL_SERVICES = (
    "ddmail-web.service",
    "ddmail-backend.service",
    "ddmail-keyhandler.service",
    "ddmail-pgpstage.service",
    "ddmail-milter.service",
    "ddmail-tlsrpt.service",
    "ddmail-periodic.service",
    "ddmail-backup.service",
    "ddmail-zone-sign.service",
)
# Every unit the role installs.
DDMAIL_UNITS = (
    *DDMAIL_SERVICES,
    "ddmail-periodic.timer",
    "ddmail-backup.timer",
    "ddmail-zone-sign.timer",
    "ddmail-postfix-reload.path",
    "ddmail-postfix-reload.service",
)

# "OK" or better on systemd's scale (0 = safe, 10 = exposed); the bar for DDMail units.
MAX_EXPOSURE = 3.9


def exposure(unit_file: Path, root: Path | None = None) -> float:
    """The overall exposure level of UNIT_FILE, or of the unit so named installed under ROOT."""
    argv = ["systemd-analyze", "security", "--offline=yes", "--no-pager"]
    argv += [f"--root={root}", unit_file.name] if root else [str(unit_file)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))

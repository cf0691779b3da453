"""community.general, which holds the chroot connection plugin, without the whole `ansible`
package (570 MB of collections): its files are extracted from the pinned `ansible` wheel, which
pip downloads from PyPI (Ansible Galaxy is not needed)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

# The `ansible` release whose community.general is used; it must match ansible-core 2.19
# (pyproject.toml's dev extras).
ANSIBLE_WHEEL_VERSION = "12.3.0"
COLLECTIONS = ("ansible_collections/community/general/",)


def ensure_collections(cache: Path) -> Path:
    """A directory for ANSIBLE_COLLECTIONS_PATH holding community.general."""
    target = cache / f"collections-ansible-{ANSIBLE_WHEEL_VERSION}"
    marker = target / ".complete"
    if marker.exists():
        return target
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob(f"ansible-{ANSIBLE_WHEEL_VERSION}-*.whl"))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "-d",
                str(wheels),
                f"ansible=={ANSIBLE_WHEEL_VERSION}",
            ],
            check=True,
            timeout=600,
        )
        found = sorted(wheels.glob(f"ansible-{ANSIBLE_WHEEL_VERSION}-*.whl"))
    with zipfile.ZipFile(found[0]) as wheel:
        names = [n for n in wheel.namelist() if n.startswith(COLLECTIONS)]
        wheel.extractall(target, names)
    marker.touch()
    return target

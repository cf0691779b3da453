"""A Debian 12 root file system to apply the playbook to, and the apply itself.

The rootfs is built once by mmdebstrap and cached as tar.zst under /var/cache/ddmail-deploy,
keyed by everything that shapes it (suite, variant, package list), so a later run restores it in
about a second. The playbook is applied through community.general.chroot inside
`unshare --mount`, with /proc and /dev mounted for the packages' maintainer scripts and a
policy-rc.d that stops them from starting daemons (there is no init in a chroot).
Also usable from the shell (helper "vm"): `python -m tests.deploy.chroot DIR`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
CACHE = Path(os.environ.get("DDMAIL_DEPLOY_CACHE", "/var/cache/ddmail-deploy"))
SUITE = "bookworm"
# What the playbook itself cannot install: Ansible's own needs (python3, python3-apt), and what
# the VM boot needs (kernel, initramfs, systemd as init, AppArmor in the kernel command line).
INCLUDE = (
    "python3",
    "python3-apt",
    "systemd",
    "systemd-sysv",
    "dbus",
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "apparmor",
    "udev",
)
# Ansible's apt cache check treats an empty list directory as fresh: keep the lists.
MMDEBSTRAP_OPTIONS = ("--variant=apt", "--skip=cleanup/apt/lists")
# apt's downloaded .deb files survive between runs here. They are hard-linked into the chroot
# before an apply and back after it, never bind-mounted: apt locks its archive directory, and
# several applies (other checkouts, the VM tests) may run at once.
APT_ARCHIVES = CACHE / "apt-archives"
BUILD_RUN = "/run/ddmail-build"
BUILD_CA = BUILD_RUN + "/ca.crt"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
POLICY_RC_D = "#!/bin/sh\n# No init in a chroot: packages must not start daemons.\nexit 101\n"


def cache_key() -> str:
    text = "\n".join([SUITE, *MMDEBSTRAP_OPTIONS, *INCLUDE])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tarball() -> Path:
    """The cached rootfs tarball, built first if missing."""
    target = CACHE / f"rootfs-{SUITE}-{cache_key()}.tar.zst"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial.tar.zst")
    subprocess.run(
        [
            "mmdebstrap",
            "--quiet",
            *MMDEBSTRAP_OPTIONS,
            "--include=" + ",".join(INCLUDE),
            SUITE,
            str(partial),
        ],
        check=True,
        timeout=900,
    )
    partial.rename(target)  # atomic: an interrupted build never looks cached
    return target


def extract(root: Path) -> None:
    """A fresh rootfs at ROOT (replacing whatever was there)."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    subprocess.run(
        ["tar", "--zstd", "-xpf", str(tarball()), "-C", str(root), "--numeric-owner"],
        check=True,
        timeout=300,
    )
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text(POLICY_RC_D)
    policy.chmod(0o755)


@dataclass(frozen=True)
class Recap:
    """One ansible-playbook run: its exit status, output and PLAY RECAP counters."""

    returncode: int
    output: str
    counts: dict[str, int]


def parse_recap(output: str) -> dict[str, int]:
    """The counters of the (single-host) PLAY RECAP line, e.g. {"ok": 80, "changed": 0, ...}."""
    lines = output.split("PLAY RECAP", 1)[-1].splitlines()
    host_lines = [line for line in lines if " : ok=" in line]
    if len(host_lines) != 1:
        raise ValueError("no single-host PLAY RECAP in the output")
    _, _, fields = host_lines[0].partition(" : ")
    return {k: int(v) for k, v in (f.split("=") for f in fields.split())}


def venv_bin() -> Path:
    return Path(sys.executable).parent


def collections_path() -> Path:
    """community.general (the chroot connection) is extracted from the `ansible` wheel into the
    cache (tests/deploy/collections.py)."""
    from tests.deploy.collections import ensure_collections

    return ensure_collections(CACHE)


def in_chroot(root: Path, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command inside ROOT (with /proc and /dev), output captured."""
    return subprocess.run(
        [*_with_mounts(root, ' exec chroot "$R" "$@"'), *argv],
        env={**os.environ, "R": str(root)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _link_debs(source: Path, target: Path) -> None:
    """Hard-link (or copy) every .deb of SOURCE that TARGET lacks into TARGET."""
    target.mkdir(parents=True, exist_ok=True)
    for deb in source.glob("*.deb"):
        dest = target / deb.name
        if dest.exists():
            continue
        partial = target / f".{deb.name}.{os.getpid()}"
        try:
            os.link(deb, partial)
        except OSError:
            shutil.copy2(deb, partial)
        partial.rename(dest)  # atomic: a concurrent reader never sees half a file


def _with_mounts(root: Path, command: str) -> list[str]:
    """argv running COMMAND ("$@" are the arguments after it) in a private mount and PID
    namespace where ROOT ($R) has /proc and /dev; everything started there ends with it."""
    return ["unshare", "--mount", "--pid", "--fork", "sh", "-ec", _mounts(root) + command, "sh"]


def _mounts(root: Path) -> str:
    return (
        'mount --make-rprivate /; mount -t proc proc "$R/proc"; mount --rbind /dev "$R/dev"; '
        # The build host's trust anchors (they may include a TLS-intercepting egress proxy's)
        # for pip in the chroot, on a tmpfs that vanishes with this mount namespace.
        f'mkdir -p "$R{BUILD_RUN}"; mount -t tmpfs -o mode=0755 tmpfs "$R{BUILD_RUN}"; '
        f'cp {shlex.quote(HOST_CA_BUNDLE)} "$R{BUILD_CA}";'
    )


def apply(root: Path, *extra: str, timeout: float = 900) -> Recap:
    """ansible-playbook site.yml with the example inventory, into ROOT through the chroot
    connection. EXTRA: further ansible-playbook arguments (-e for what a test host differs in)."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(collections_path()),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{venv_bin()}:{os.environ.get('PATH', '')}",
        "R": str(root),
    }
    argv = [
        str(venv_bin() / "ansible-playbook"),
        "-i",
        str(ANSIBLE_DIR / "inventories" / "example"),
        "-c",
        "community.general.chroot",
        "-e",
        f"ansible_host={root}",
        "-e",
        # pip honours REQUESTS_CA_BUNDLE over PIP_CERT (requests merges the environment last).
        json.dumps(
            {"ddmail_pip_environment": {k: BUILD_CA for k in ("PIP_CERT", "REQUESTS_CA_BUNDLE")}}
        ),
        *extra,
        str(ANSIBLE_DIR / "site.yml"),
    ]
    archives = root / "var/cache/apt/archives"
    _link_debs(APT_ARCHIVES, archives)
    proc = subprocess.run(
        [*_with_mounts(root, ' exec "$@"'), *argv],
        env=env,
        cwd=ANSIBLE_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    _link_debs(archives, APT_ARCHIVES)
    for deb in archives.glob("*.deb"):  # the image carries no package files
        deb.unlink()
    output = proc.stdout + proc.stderr
    try:
        counts = parse_recap(output)
    except ValueError:
        counts = {}
    return Recap(proc.returncode, output, counts)


def main() -> None:
    """`python -m tests.deploy.chroot DIR [ansible-playbook args]`: fresh rootfs, one apply."""
    root = Path(sys.argv[1]).resolve()
    extract(root)
    recap = apply(root, *sys.argv[2:])
    print(recap.output)
    sys.exit(recap.returncode)


if __name__ == "__main__":
    main()
